"""queues.* endpoints.

    entries  the ordered entries under a queue, with an atomic pop; the queue-row lookups others call
    crud     queue documents and the queues.* endpoints over them and their entries (re-exports entries')
    claim    queues.get_next_task: entries popped (fair share), their tasks leased, the long-poll
    metrics  queue length and wait time over time, for queues.get_queue_metrics
"""
