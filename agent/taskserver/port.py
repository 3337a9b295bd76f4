"""What the agent needs from the task server: the `TaskServer` protocol.

The daemon and a task run speak to the server through three calls; the endpoints they use are
listed in `AGENT_ENDPOINTS` (the daemon claims and reports presence, a run reads the task,
changes its status, renews its lease or pings it, checks for an abort and ships its log).
Two implementations, side by side: `shipyard.client.api.ApiClient` over HTTP (http.py) and
`InMemoryTaskServer` (memory.py), a small model of a Shipyard server for in-process tests.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

AGENT_ENDPOINTS: Mapping[str, str] = {
    "server.info": "which Shipyard extensions the server offers (long poll, leases, task keys)",
    "queues.get_default": "the queue to listen on when none is named",
    "queues.get_by_id": "a queue named by id",
    "queues.get_all": "a queue named by name",
    "queues.create": "--create-queue",
    "queues.get_next_task": "the claim: pop one task, optionally as a lease (attempt = fencing token)",
    "workers.register": "the daemon starts",
    "workers.status_report": "presence, machine stats and the running task",
    "workers.unregister": "the daemon stops",
    "workers.reconcile": "tasks this worker held before it restarted go back to their queues",
    "auth.create_credentials": "the run's own short-lived key",
    "auth.extend_credentials": "keep the run's key alive",
    "auth.revoke_credentials": "the run ended",
    "tasks.get_by_id": "the task document the run executes",
    "tasks.get_all": "the abort check (status and status_message)",
    "tasks.wait_status": "the abort heard at once: long-poll of status and status_message (task_watch extension)",
    "tasks.started": "in_progress (pulled, then running)",
    "tasks.completed": "the outcome",
    "tasks.failed": "the outcome",
    "tasks.stopped": "the outcome",
    "tasks.release": "a leased run hands the task back for another try",
    "tasks.renew_lease": "a leased run is alive",
    "tasks.ping": "an unleased run is alive",
    "tasks.record_exit": "the process exited (before logs are flushed and the outcome sent)",
    "tasks.set_requirements": "the frozen environment",
    "tasks.edit": "the commit the run really used; the output destination (sdk.development.default_output_uri)",
    "events.add_batch": "the console log (add_events)",
}


class TaskServer(Protocol):
    """A task server as the agent calls it. Errors are Shipyard's: `ServerError` (with the
    server's code and subcode, e.g. 150 for a superseded attempt) and `ServerUnreachable`."""

    def call(self, endpoint: str, data: Mapping[str, Any] | None = None, *, version: str | None = None,
             timeout: float | None = None, deadline_s: float | None = None) -> dict[str, Any]:
        """Call `service.action` with `data`; returns the answer's data ({} when empty)."""
        ...

    def add_events(self, events: Iterable[Mapping[str, Any]], *, deadline_s: float = 10.0) -> dict[str, Any]:
        """`events.add_batch`; returns `{added, errors, ...}`."""
        ...

    def server_info(self) -> dict[str, Any]:
        """`server.info`, or {} from a server that does not have it."""
        ...
