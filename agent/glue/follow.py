"""`Follower`: the engine's jobs mapped back onto their tasks, one `watch()` at a time.

    PENDING    status message "pending in <engine> job <id>: <reason>" (all of one watch in one
               `tasks.set_messages`, compare-and-set, where the server offers it); the lease renewed
               (all of one watch's due renewals in one `tasks.renew_leases` where the server offers it)
    RUNNING    the lease renewed (the node's `shipyard execute` reports everything else)
    SUCCEEDED  nothing: the node reported the task's end
    FAILED     OOM / time limit / exit: if the task is still in progress (the node was killed before it
               could report), it fails with the engine's reason; the job's own output file is
               attached when the node never got as far as its log shipper
    CANCELLED  still in progress: stopped
    INFRA      the claim is handed back (`tasks.release` with retry): the lease machinery requeues it
    abort      (task stopped, or "stopping" asked) `engine.cancel(job, grace)`; a job that never
               started ends the task `stopped` here
Every report carries the job's attempt, so a job of a superseded claim changes nothing (and is
cancelled as soon as its lease renewal is refused). Jobs are adopted from `statuses()` after a
restart (attempt and key from the job's comment/label).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.execution import lifecycle
from agent.execution.lifecycle import Outcome
from agent.execution.taskkey import TaskKey, TaskKeys
from agent.glue.engine import Engine, EngineUnavailable, JobStatus, Phase, describe_exit
from agent.glue.request import GlueSettings
from agent.taskserver.port import TaskServer
from shipyard.errors import ServerError, ServerUnreachable
from shipyard.protocol import (
    MAX_MESSAGES,
    MAX_RENEWALS,
    RENEW_LEASES,
    SET_MESSAGES,
    STOP_REQUEST,
    OutcomeKind,
    Subcode,
    TaskStatus,
)

log = logging.getLogger("shipyard.agent.glue")
_GONE = frozenset({TaskStatus.STOPPED, TaskStatus.CLOSED, TaskStatus.CREATED, TaskStatus.QUEUED})
"""A task in one of these while its job lives was stopped, reset or requeued: the job must go.
(completed/failed: the node reported; its job ends by itself.)"""
OUTPUT_TAIL_LINES = 50
GLUE_MESSAGES = ("pending in", "submitted to", "submitting to")
"""How the status messages the glue writes begin (until the node writes its own)."""
_REASONS = {
    "OUT_OF_MEMORY": (OutcomeKind.USER_ERROR, "the task used more memory than its job was given (raise "
                      "Shipyard/memory_mb or the glue's memory setting)"),
    "OOMKilled": (OutcomeKind.USER_ERROR, "the task used more memory than its pod was given"),
    "TIMEOUT": (OutcomeKind.TIMED_OUT, "the job ran past its time limit (the task's maximum run time plus grace)"),
    "DeadlineExceeded": (OutcomeKind.TIMED_OUT, "the job ran past its time limit"),
}


@dataclass
class Job:
    job_id: str
    task_id: str
    attempt: int | None
    key: str = ""               # the task key's access key ("" when the agent's own was passed on)
    message: str = ""           # the status message this glue last wrote
    owns_message: bool = True   # False once someone else wrote the task's message (compare-and-set lost)
    cancelling: bool = False
    ended: bool = False
    renewed_at: float = 0.0
    extended_at: float = 0.0


class Follower:
    def __init__(self, api: TaskServer, engine: Engine, settings: GlueSettings, task_keys: TaskKeys,
                 say: Callable[[str], None]):
        self.api = api
        self.engine = engine
        self.settings = settings
        self.task_keys = task_keys
        self.say = say
        self.jobs: dict[str, Job] = {}
        self.down: str | None = None     # why the engine cannot be reached, while it cannot
        self._lock = threading.Lock()
        self._extensions: dict | None = None   # the server's Shipyard extensions (asked at the first need)
        self._messages: list[tuple[Job, str]] = []   # this watch's messages, written together at its end
        self._renewals: list[Job] = []               # this watch's due lease renewals, sent together at its end

    @property
    def active(self) -> list[Job]:
        with self._lock:
            return [job for job in self.jobs.values() if not job.ended]

    def adopt(self, job: Job, message: str) -> None:
        """A job just submitted; `message` is what its task already says (no call: the watch
        writes the pending reason as soon as the engine gives one)."""
        job.renewed_at = job.extended_at = time.monotonic()
        job.message = message
        with self._lock:
            found = self.jobs.setdefault(job.job_id, job)
            if found is not job:
                # a watch listed the job before the engine's submit answered, and follows it
                # already: that Job stays (its message is what the task says now), brought up to date
                found.renewed_at = found.extended_at = job.renewed_at
                found.key = found.key or job.key
                found.message = found.message or message

    def note_down(self, why: str) -> None:
        if self.down != why:
            self.say(f"{self.engine.name} cannot be reached: {why}; tasks stay queued, retrying every "
                     f"{self.settings.retry_s:g}s")
        self.down = why

    # -- one watch --------------------------------------------------------------------------
    def watch(self) -> bool:
        """Map every job's phase back; False when the engine could not be asked."""
        try:
            statuses = self.engine.statuses()
        except EngineUnavailable as exc:
            self.note_down(str(exc))
            return False
        if self.down is not None:
            self.say(f"{self.engine.name} answers again")
            self.down = None
        followed = [(job, status) for status in statuses
                    if (job := self._job_of(status)) is not None and not job.ended]
        tasks = self._tasks(job.task_id for job, _status in followed)
        for job, status in followed:
            self._follow(job, status, tasks.get(job.task_id))
        self._renew_leases()
        self._write_messages()
        return True

    def _job_of(self, status: JobStatus) -> Job | None:
        with self._lock:
            job = self.jobs.get(status.job_id)
            if job is None and status.attempt is not None:
                job = self.jobs[status.job_id] = Job(status.job_id, status.task_id, status.attempt, status.key)
                log.info("found %s job %s of task %s (attempt %s)", self.engine.name, status.job_id,
                         status.task_id, status.attempt)
        return job

    def _tasks(self, ids: Iterable[str]) -> dict[str, dict]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        try:
            rows = self.api.call("tasks.get_all", {"id": wanted, "only_fields": ["id", "status", "status_message"],
                                                   "search_hidden": True}, deadline_s=10).get("tasks") or []
        except (ServerError, ServerUnreachable) as exc:
            log.warning("could not read the tasks' statuses: %s", exc)
            return {}
        return {row["id"]: row for row in rows}

    def _follow(self, job: Job, status: JobStatus, task: dict | None) -> None:
        if status.ended:
            self._ended(job, status, task)
        elif task is not None and _abort_asked(task):
            self._abort(job, status)
        elif not job.cancelling and task is not None and task.get("status") == TaskStatus.IN_PROGRESS:
            self._keep_alive(job)     # (a task the node already ended holds no lease to renew)
            if status.phase == Phase.PENDING:
                reason = f": {status.reason}" if status.reason else ""
                self._note_message(job, task, f"pending in {self.engine.name} job {job.job_id}{reason}")

    # -- the job's end ----------------------------------------------------------------------
    def _ended(self, job: Job, status: JobStatus, task: dict | None) -> None:
        job.ended = True
        if job.key:
            self.task_keys.revoke(TaskKey(job.key, "", minted=True))
        running = task is not None and task.get("status") == TaskStatus.IN_PROGRESS
        where = f"{self.engine.name} job {job.job_id}"
        if status.phase == Phase.INFRA:
            self._hand_back(job, f"{where} ended {status.reason or 'for infrastructure reasons'}")
            self._cancel_quietly(job)   # a job Slurm requeued itself would run the old claim again
        elif not running:
            return        # the node reported the end itself (or the task moved on)
        elif status.phase == Phase.CANCELLED:
            self._report(job, Outcome(TaskStatus.STOPPED, OutcomeKind.ABORTED, f"{where} was cancelled"))
        elif status.phase == Phase.FAILED:
            self._attach_output(job, status, task)
            kind, why = _REASONS.get(status.reason, (OutcomeKind.USER_ERROR, describe_exit(status.exit_code)))
            self._report(job, Outcome(TaskStatus.FAILED, kind, f"{where} ended {status.reason or 'FAILED'}: {why}",
                                      status.exit_code))

    def _hand_back(self, job: Job, reason: str) -> None:
        self.say(f"task {job.task_id}: {reason}; handing it back to its queue")
        try:
            answer = self.api.call("tasks.release", {"task": job.task_id, "attempt": job.attempt, "retry": True,
                                                     "reason": f"{OutcomeKind.INFRASTRUCTURE}: {reason}"})
            self.say(f"task {job.task_id}: {answer.get('outcome', 'released')}")
        except ServerError as exc:
            if exc.subcode != Subcode.STALE_CLAIM:
                log.warning("task %s: could not hand it back: %s", job.task_id, exc)
        except ServerUnreachable as exc:
            log.warning("task %s: could not hand it back (its lease expires instead): %s", job.task_id, exc)

    def _cancel_quietly(self, job: Job) -> None:
        try:
            self.engine.cancel(job.job_id, 0)
        except EngineUnavailable as exc:
            log.warning("task %s: could not cancel %s job %s: %s", job.task_id, self.engine.name, job.job_id, exc)

    def _report(self, job: Job, outcome: Outcome) -> None:
        self.last_line(job.task_id, job.attempt, f"shipyard: task {job.task_id} ended: {outcome.status_reason}")
        self.say(f"task {job.task_id} {outcome.status}: {outcome.status_reason}")
        try:
            lifecycle.report_outcome(self.api, job.task_id, outcome, self.settings.worker, job.attempt)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not report its end: %s", job.task_id, exc)

    def _attach_output(self, job: Job, status: JobStatus, task: dict | None) -> None:
        """The node never reached its log shipper (the status message is still the glue's own):
        the tail of the engine's output file is the only trace; it goes to the console."""
        message = str((task or {}).get("status_message") or "")
        if not status.output or not message.startswith(GLUE_MESSAGES):
            return
        try:
            lines = Path(status.output).read_text(errors="replace").splitlines()[-OUTPUT_TAIL_LINES:]
        except OSError as exc:
            lines = [f"(its output file {status.output} cannot be read: {exc})"]
        self.last_line(job.task_id, job.attempt, "\n".join(
            [f"shipyard: the job died before the task started; the last lines of {status.output}:", *lines]))

    # -- while it runs ----------------------------------------------------------------------
    def _abort(self, job: Job, status: JobStatus) -> None:
        if job.cancelling:
            return
        job.cancelling = True
        self.say(f"task {job.task_id}: abort requested; cancelling {self.engine.name} job {job.job_id} "
                 f"(grace {self.settings.grace_s:g}s)")
        try:
            self.engine.cancel(job.job_id, self.settings.grace_s)
        except EngineUnavailable as exc:
            job.cancelling = False        # asked again at the next watch
            self.note_down(str(exc))
            return
        if status.phase == Phase.PENDING:   # no node will report it: the glue does
            self._report(job, Outcome(TaskStatus.STOPPED, OutcomeKind.ABORTED,
                                      f"abort requested while pending in {self.engine.name} job {job.job_id}"))

    def _keep_alive(self, job: Job) -> None:
        """Renew the claim's lease (a refusal: the claim was superseded, the job must go) and
        extend the task's key."""
        now = time.monotonic()
        if job.attempt is not None and now - job.renewed_at >= self.settings.lease_s / 4:
            if self._offers(("leases", "renew_many"), RENEW_LEASES):
                self._renewals.append(job)    # sent with the others due at the end of this watch
            else:
                self._renew_lease(job, now)
        if job.key and now - job.extended_at >= self.task_keys.renew_every_s:
            self.task_keys.extend(TaskKey(job.key, "", minted=True))
            job.extended_at = now

    def _renew_lease(self, job: Job, now: float) -> None:
        try:
            self.api.call("tasks.renew_lease", {"task": job.task_id, "attempt": job.attempt,
                                                "lease_s": self.settings.lease_s}, deadline_s=5)
            job.renewed_at = now
        except ServerError as exc:
            if exc.subcode == Subcode.STALE_CLAIM:
                self._superseded(job)
        except ServerUnreachable as exc:
            log.warning("task %s: could not renew its lease: %s", job.task_id, exc)

    def _renew_leases(self) -> None:
        """This watch's due renewals in one call; a job whose claim was superseded is cancelled."""
        due, self._renewals = self._renewals, []
        if not due:
            return
        for start in range(0, len(due), MAX_RENEWALS):   # the server takes at most that many per call
            self._renew_batch(due[start:start + MAX_RENEWALS])

    def _renew_batch(self, due: list[Job]) -> None:
        now = time.monotonic()
        body = {"tasks": [{"task": job.task_id, "attempt": job.attempt} for job in due],
                "lease_s": self.settings.lease_s}
        try:
            answer = self.api.call(RENEW_LEASES, body, deadline_s=5)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("could not renew %d task(s)' leases: %s", len(due), exc)
            return
        renewed, superseded = set(answer.get("renewed") or ()), set(answer.get("stale") or ())
        for job in due:
            if job.task_id in renewed:
                job.renewed_at = now
            elif job.task_id in superseded:
                self._superseded(job)

    def _superseded(self, job: Job) -> None:
        self.say(f"task {job.task_id}: {self.engine.name} job {job.job_id} belongs to a superseded claim; cancelling it")
        job.cancelling = True
        self._cancel_quietly(job)

    def _note_message(self, job: Job, task: dict, message: str) -> None:
        """A pending reason to show: kept for this watch's one `tasks.set_messages` (compare-and-set
        against the message this glue wrote last), or written at once where the server lacks it."""
        if message == job.message or not job.owns_message:
            return
        if not self._offers_batch() or job.attempt is None:
            self._write_message(job, message)
            return
        if not job.message:   # a job found again after a restart: its task still shows the glue's message
            current = str(task.get("status_message") or "")
            if not current.startswith(GLUE_MESSAGES):
                return
            job.message = current
        self._messages.append((job, message))

    def _write_messages(self) -> None:
        """This watch's pending reasons in as few calls as the server takes; a task whose message
        moved on since the glue wrote it (a stop request, the node's own) keeps it, and the glue
        writes that one no more."""
        noted, self._messages = self._messages, []
        for start in range(0, len(noted), MAX_MESSAGES):   # the server takes at most that many per call
            self._write_message_batch(noted[start:start + MAX_MESSAGES])

    def _write_message_batch(self, noted: list[tuple[Job, str]]) -> None:
        body = {"tasks": [{"task": job.task_id, "attempt": job.attempt, "status_message": message,
                           "expect": job.message} for job, message in noted]}
        try:
            updated = set(self.api.call(SET_MESSAGES, body, deadline_s=10).get("updated") or ())
        except (ServerError, ServerUnreachable) as exc:
            log.warning("could not set %d task(s)' status messages: %s", len(noted), exc)
            return
        for job, message in noted:
            if job.task_id in updated:
                job.message = message
            else:
                job.owns_message = False

    def _offers_batch(self) -> bool:
        return self._offers(("status_messages", "endpoint"), SET_MESSAGES)

    def _offers(self, where: tuple[str, str], endpoint: str) -> bool:
        """Whether server.info advertises `endpoint` at extensions[where[0]][where[1]] (asked once;
        a server that cannot be asked now offers nothing until it answers)."""
        if self._extensions is None:
            try:
                self._extensions = (self.api.server_info().get("shipyard") or {}).get("extensions") or {}
            except (ServerError, ServerUnreachable) as exc:
                log.warning("could not ask the server which extensions it offers: %s", exc)
                return False
        return (self._extensions.get(where[0]) or {}).get(where[1]) == endpoint

    def _write_message(self, job: Job, message: str) -> None:
        """One status message with `tasks.started` (a server without SET_MESSAGES): it would
        overwrite a stop request ("stopping") that landed since this watch read the task, so the
        task is read again right before (the window left is that read's round trip)."""
        fresh = self._tasks([job.task_id]).get(job.task_id)
        if fresh is None or fresh.get("status") != TaskStatus.IN_PROGRESS or _abort_asked(fresh):
            return
        try:
            body = {"task": job.task_id, "status_message": message, "force": False}
            if job.attempt is not None:
                body["attempt"] = job.attempt
            self.api.call("tasks.started", body, deadline_s=10)
            job.message = message
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not set its status message: %s", job.task_id, exc)

    def last_line(self, task_id: str, attempt: int | None, line: str) -> None:
        event: dict = {"type": "log", "task": task_id, "timestamp": int(time.time() * 1000), "level": "error",
                       "worker": self.settings.worker, "msg": line}
        if attempt is not None:
            event["attempt"] = attempt
        try:
            self.api.add_events([event], deadline_s=5)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not write to its console: %s", task_id, exc)


def _abort_asked(task: dict) -> bool:
    status = task.get("status")
    return status in _GONE or (status == TaskStatus.IN_PROGRESS
                               and STOP_REQUEST in str(task.get("status_message") or "").lower())
