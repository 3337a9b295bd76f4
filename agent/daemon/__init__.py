"""The daemon: `shipyard daemon`'s loop and what it keeps while it runs.

    loop       Daemon: the work loop (claim -> run -> report), shutdown, drain
    poller     where the next task comes from: queue resolution and the claim call
    slots      what the daemon may run at once
    reporter   worker presence: register, status_report, unregister
    stats      machine statistics for status reports
    metrics    the Prometheus metrics (`--metrics-port`)
    detach     `--detached` and `--stop`: the daemon as a background process
"""
