"""One task run, from claim to reported outcome.

    runner      TaskRun: fetch, prepare, execute, ship logs, report (the run's table of contents)
    build       rebuild the task's code and Python (sandbox.git_workspace, sandbox.env_cache)
    local       venv mode: the task runs as a child process on this machine
    docker      Docker mode: the task runs in its own container
    process     child processes in their own group: TERM, grace, KILL
    taskenv     the task's command line and environment
    task_user   tasks as an unprivileged user of their own (`--task-user`)
    taskkey     a short-lived key of its own for every run
    watch       while it runs: abort requests, pings, the lease, the max run time
    lifecycle   how a run's end is reported: one Outcome -> ClearML status calls
"""
