"""The node's side of a glue job: `shipyard execute --id T --attempt N` run as the glue's claim.

    HeldKey          the run's key is the one the glue minted for this task (it is the process's
                     own API key): nothing is minted, extended or revoked here - the glue does that
    SignalVerdict    a signal to the node's run (`scancel --batch`, a requeue, a preemption, a time
                     limit): an abort when the task was asked to stop (ends `stopped`), else the
                     engine taking the job away (`agent_shutdown`: the claim is handed back and the
                     lease rules requeue the task)
    ClaimedRun       the run itself: a task process killed by the same signal as the node's run (Slurm
                     signals every process of a job at once on requeue) ends as the verdict says, not
                     as "killed by signal 15"; the node's "started" mark (fenced: a superseded claim
                     stops here) goes out beside the task's fetch (agent/glue/node_start.py), begun
                     by `shipyard execute` before it imports the run
"""
from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from agent.execution.contract import RunResult
from agent.execution.lifecycle import Outcome
from agent.execution.runner import TaskRun
from agent.execution.taskkey import TaskKey
from agent.glue.node_start import STARTED_MESSAGE, begin
from agent.taskserver.port import TaskServer
from shipyard.errors import ServerError, ServerUnreachable
from shipyard.protocol import STOP_REQUEST, OutcomeKind, TaskStatus

log = logging.getLogger("shipyard.agent.glue.node")


class HeldKey:
    """A `TaskKeys` stand-in for a run whose own API key already is its task key."""

    renew_every_s = 3600.0

    def __init__(self, access_key: str, secret_key: str):
        self.key = TaskKey(access_key, secret_key, minted=False)

    def mint(self, task_id: str) -> TaskKey:
        return self.key

    def extend(self, key: TaskKey) -> None:
        return None

    def revoke(self, key: TaskKey) -> None:
        return None


class SignalVerdict:
    """`should_abort` for a glue job's run: True once signalled, after deciding what the signal meant."""

    def __init__(self, api: TaskServer, task_id: str, signalled: Callable[[], bool], engine: str = "the engine"):
        self.api = api
        self.task_id = task_id
        self.signalled = signalled
        self.engine = engine
        self.verdict: tuple[str, str] | None = None

    def __call__(self) -> bool:
        if not self.signalled():
            return False
        if self.verdict is None:
            self.verdict = self._decide()
        return True

    def _decide(self) -> tuple[str, str]:
        try:
            rows = self.api.call("tasks.get_all", {"id": [self.task_id], "only_fields": ["status", "status_message"],
                                                   "search_hidden": True}, deadline_s=5).get("tasks") or []
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not ask why it was signalled: %s", self.task_id, exc)
            rows = []
        status = rows[0].get("status") if rows else None
        message = str(rows[0].get("status_message") or "") if rows else ""
        if status != TaskStatus.IN_PROGRESS or STOP_REQUEST in message.lower():
            return OutcomeKind.ABORTED, "abort requested (tasks.stop)"
        return OutcomeKind.AGENT_SHUTDOWN, f"{self.engine} ended the job (signalled: requeue, preemption or limit)"


SIGNAL_WAIT_S = 1.0
"""How long a run whose task died of SIGTERM/SIGKILL waits for its own signal to land (Slurm
signals the job's processes one by one) before calling it the task's own death."""


class ClaimedRun(TaskRun):
    """`TaskRun` for `execute --attempt N`: aborts and signals are judged by a `SignalVerdict`."""

    def __init__(self, *args: Any, verdict: SignalVerdict, started_message: str = STARTED_MESSAGE,
                 begun: Future[dict] | None = None, **kwargs: Any):
        super().__init__(*args, should_abort=verdict, **kwargs)
        self.verdict = verdict
        self.started_message = started_message
        self.begun = begun

    def _fetch(self) -> dict:
        """The task's document, read while the node marks the task started as this claim
        (agent/glue/node_start.py; begun before the run's imports where `begun` is given)."""
        begun, self.begun = self.begun, None
        return (begun or begin(self.api, self.task_id, self.attempt, self.started_message)).result()

    def _judged(self) -> bool:
        if not self.verdict():
            return False
        self.shutdown_abort = self.verdict.verdict or self.shutdown_abort
        return True

    def _outcome(self, result: RunResult, abort: tuple[str, str] | None) -> Outcome:
        if abort is None and result.exit.signalled in (signal.SIGTERM, signal.SIGKILL):
            deadline = time.monotonic() + SIGNAL_WAIT_S
            while not self._judged() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._judged():
                abort = self.shutdown_abort
        return super()._outcome(result, abort)
