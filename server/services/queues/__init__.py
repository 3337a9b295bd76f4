"""queues.* endpoints.

    crud     queue documents and their ordered entries, with an atomic pop and long-poll
    metrics  queue length and wait time over time, for queues.get_queue_metrics
"""
