"""workers.* endpoints.

    crud     registration, status reports, listing; a worker vanishes after its timeout
    stats    machine stats over time from the status reports: get_stats, get_activity_report,
             get_metric_keys
"""
