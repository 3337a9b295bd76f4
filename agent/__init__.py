"""The execution agent: pull queued tasks, rebuild their environment, run them, report back.

    daemon/      the worker loop: claim, slots, presence, machine stats, Prometheus metrics
    execution/   one task run: build, start (venv or Docker), watch, report its outcome
    logs/        a task's console: read the pipe, spool, ship as `log` events
    gpus/        the GPU inventory (NVML) and which GPUs each task gets

The agent reaches the server only through shipyard.client (HTTP); it never imports server/.
"""
