"""The agent's view of the task server.

    port.py          the `TaskServer` protocol and the endpoints the agent uses
    http.py          over HTTP: shipyard.client.api.ApiClient
    memory.py        `InMemoryTaskServer`: queues, tasks, leases, statuses, events and workers
                     in dicts, for running the daemon and a task run in-process
    memory_state.py  `InMemoryState`, its base: the dicts and the rules every endpoint shares
                     (status changes, fencing, leases, the reaper)
"""
from agent.taskserver.port import TaskServer

__all__ = ["TaskServer"]
