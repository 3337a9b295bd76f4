"""How a task's end is reported: one `Outcome` per run, mapped to the ClearML status calls.

status_reason starts with a machine-readable kind (`user_error:`, `infrastructure:`,
`aborted:`, `timed_out:`, `agent_shutdown:`) followed by a sentence a person can act on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.taskserver.port import TaskServer
from shipyard.errors import ServerError
from shipyard.protocol import RETRYABLE, OutcomeKind, Subcode, TaskStatus

log = logging.getLogger("shipyard.agent.lifecycle")


@dataclass(frozen=True)
class Outcome:
    status: str          # completed | failed | stopped
    kind: str            # done | user_error | workspace | requirements | infrastructure | aborted | timed_out | agent_shutdown
    reason: str          # one line for a person
    exit_code: int | None = None

    @property
    def status_reason(self) -> str:
        return self.reason if self.kind == OutcomeKind.DONE else f"{self.kind}: {self.reason}"


def fenced(attempt: int | None) -> dict[str, int]:
    """The claim's fence for a write about the task it runs: {"attempt": N} under a lease (the
    server refuses the write once that claim is gone), nothing for an unleased claim."""
    return {} if attempt is None else {"attempt": attempt}


def report_outcome(api: TaskServer, task_id: str, outcome: Outcome, worker: str, attempt: int | None = None) -> None:
    """Tell the server how the task ended. With a lease (attempt set), infrastructure trouble
    hands the task back for another try instead of failing it; a superseded claim says nothing."""
    try:
        if attempt is not None and outcome.kind in RETRYABLE:
            api.call("tasks.release", {"task": task_id, "attempt": attempt, "retry": True,
                                       "reason": outcome.status_reason[:1000]})
            return
        _report_status(api, task_id, outcome, worker, attempt)
    except ServerError as exc:
        if exc.subcode != Subcode.STALE_CLAIM:
            raise
        log.warning("task %s: not reporting '%s': this agent's claim was superseded (%s)",
                    task_id, outcome.status, exc)


_STATUS_ENDPOINT: dict[str, str] = {TaskStatus.COMPLETED: "tasks.completed", TaskStatus.FAILED: "tasks.failed",
                                    TaskStatus.STOPPED: "tasks.stopped"}


def _report_status(api: TaskServer, task_id: str, outcome: Outcome, worker: str, attempt: int | None) -> None:
    endpoint = _STATUS_ENDPOINT[outcome.status]
    body: dict[str, object] = {"task": task_id, "status_reason": outcome.status_reason[:1000],
                               "status_message": f"Changed by shipyard {worker}", **fenced(attempt)}
    try:
        api.call(endpoint, {**body, "force": False})
    except ServerError as exc:
        if exc.code != 400 or exc.subcode == Subcode.STALE_CLAIM:
            raise
        # The task moved meanwhile (e.g. stopped from outside while we finished): force the
        # final word only where that is not a lie - never turn a stopped task into completed.
        current = api.call("tasks.get_all", {"id": [task_id], "only_fields": ["status"]})["tasks"]
        status = current[0]["status"] if current else None
        if status in (TaskStatus.STOPPED, TaskStatus.FAILED) and outcome.status == TaskStatus.COMPLETED:
            return
        api.call(endpoint, {**body, "force": True})


def mark_started(api: TaskServer, task_id: str, message: str, attempt: int | None = None) -> None:
    api.call("tasks.started", {"task": task_id, "force": True, "status_message": message, **fenced(attempt)})
