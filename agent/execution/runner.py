"""Run one task end to end: fetch, prepare, execute, ship logs, report the outcome.

`TaskRun.run()` reads as the sequence of steps; each step is a small method. Where and how the
task's process runs is an `Executor`'s business: `LocalExecutor` (agent/local_exec.py) builds a
venv on this machine and starts a child process, `DockerExecutor` (agent/docker_exec.py) runs
the task in a container. Logs, the abort/lease/max-runtime watch and the outcome are the same
for both. Every failure ends in an `Outcome` with a reason a person can act on (also the last
line of the task's console); nothing here lets a task end "completed" unless its process exited 0.

A preemption request (the watch's `preempted`) is executed by `_preempt`: the notice file and
signal of agent/execution/preempt.py, the queue's grace, then the usual stop; the outcome hands
the task back to its queue. The daemon may also `request_stop` a run (its idle-GPU policy, a
packed task over its memory request).

The task process never gets the agent's key: each run mints a short-lived key of its own
(agent/taskkey.py) before anything starts, keeps it alive from the watch loop and revokes it
when the run ends, whatever the outcome.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any, TypeVar

from agent.execution import lifecycle, taskconf, taskenv
from agent.execution.build import BuiltTask
from agent.execution.contract import Executor, Launched, Prepared, RunContext, RunResult
from agent.execution.lifecycle import Outcome, fenced
from agent.execution.preempt import PREEMPT_FILE_NAME, Notice
from agent.execution.taskkey import NO_KEY, TaskKey, TaskKeys
from agent.execution.watch import TaskWatch
from agent.gpus.packing import EXCEEDED_FIELD, REQUEST_FIELD
from agent.logs.shipper import LogShipper, OutputReader, ShipStats
from agent.taskserver.port import TaskServer
from sandbox.env_cache import EnvCache
from sandbox.repo_cache import RepoCache
from shipyard import faults
from shipyard.client.config import Settings
from shipyard.errors import InfrastructureError, ServerError, ServerUnreachable, TaskError
from shipyard.protocol import RETRYABLE, OutcomeKind, Subcode, TaskStatus
from shipyard.redact import Redactor

log = logging.getLogger("shipyard.agent.runner")
_T = TypeVar("_T")
ExecutorFactory = Callable[[RunContext], Executor[Any]]
"""Builds the run's executor from its context (tests pass an in-process one)."""
SHUTDOWN_ABORT: tuple[str, str] = (OutcomeKind.AGENT_SHUTDOWN, "the agent was asked to stop twice and aborted the task")
"""(kind, reason) of a run aborted because `should_abort` said so. Under a lease an `agent_shutdown`
hands the task back to its queue; `shipyard up` passes an `aborted` one: the person stopped it."""


# -- the run ------------------------------------------------------------------------------------


class TaskRun:
    def __init__(self, api: TaskServer, settings: Settings, task_id: str, *, queue: str | None = None,
                 should_abort: Callable[[], bool] = lambda: False, env_cache: EnvCache | None = None,
                 repo_cache: RepoCache | None = None, echo: Callable[[str], None] | None = None,
                 attempt: int | None = None, slot_env: Mapping[str, str] | None = None,
                 gpus: Sequence[int] = (), task_keys: TaskKeys | None = None,
                 log_stats: Callable[[ShipStats], None] | None = None,
                 executor_factory: ExecutorFactory | None = None, watch_check_s: float = 1.0,
                 shutdown_abort: tuple[str, str] = SHUTDOWN_ABORT):
        self.api = api
        self.shutdown_abort = shutdown_abort
        self.log_stats = log_stats            # gets the log shipper's counts when the run ends (metrics)
        self.executor_factory = executor_factory   # None: local or docker, as the settings say
        self.watch_check_s = watch_check_s
        self.task_keys = task_keys or TaskKeys(api, (settings.api.access_key, settings.api.secret_key),
                                               ttl_s=settings.agent.task_key_ttl_s)
        self.task_key: TaskKey = NO_KEY
        self.attempt = attempt
        self.slot_env = dict(slot_env or {})   # e.g. CUDA_VISIBLE_DEVICES for the GPUs this run holds
        self.gpus = tuple(gpus)
        self.settings = settings
        self.task_id = task_id
        self.queue = queue
        self.should_abort = should_abort
        self.env_cache = env_cache
        self.repo_cache = repo_cache
        self.echo = echo
        self.worker = settings.agent.worker_id
        self.target = settings.agent.work_dir / "tasks" / task_id
        self.redactor = Redactor(settings.secrets(), settings.agent.redact_patterns)
        self.shipper: LogShipper | None = None
        self.timings: dict[str, float] = {}
        self.executor: Executor[Any] | None = None
        self.stop_request: tuple[str, str] | None = None   # set by the daemon (e.g. its idle-GPU policy)
        self._task_doc: Future[dict] | None = None   # the task document, read on a thread (prefetch)

    def request_stop(self, reason: str, kind: str = OutcomeKind.ABORTED) -> None:
        """Stop the running task from the agent's side: it ends `stopped` with this reason (a
        retryable kind, e.g. infrastructure, hands it back to its queue instead)."""
        self.stop_request = (kind, reason)

    # -- the steps ------------------------------------------------------------------------
    def prefetch(self, document: dict | None = None) -> None:
        """The task's document: `document` (the claim brought it), or read now on a thread. The
        daemon calls it before it marks the claim started; nothing the run uses from the document
        changes with that call (its run's history entry is written by the claim)."""
        if self._task_doc is not None:
            return
        if document is None:
            self._task_doc = _in_thread(self._fetch)
            return
        self._task_doc = Future()
        self._task_doc.set_result(document)

    def run(self, task_key: TaskKey | None = None) -> Outcome:
        """Run the task to its reported outcome. `task_key`: the run's key, minted already by the
        caller's `tasks.start_run` (None: minted here)."""
        self.prefetch()   # the task document is read while the key is minted
        self._mint_task_key(task_key)  # first: the redactor learns its secret before any line is shipped
        try:
            outcome = self._run_and_ship()
            lifecycle.report_outcome(self.api, self.task_id, outcome, self.worker, self.attempt)
            return outcome
        finally:
            # After the report: a kill -9 between the task's exit and its report is the one way a
            # task runs twice, so nothing may widen that window (the process group is gone by now).
            # Removing the run's directory, and verifying its venv's cache entry (env_cache.Lease), too.
            self.task_keys.revoke(self.task_key)
            if self.executor is not None:
                self.executor.cleanup()

    def _run_and_ship(self) -> Outcome:
        self.shipper = self._start_shipper()
        try:
            outcome = self._run_steps()
            self.note(self._ending(outcome))
            return outcome
        finally:
            self._close_shipper()

    def _run_steps(self) -> Outcome:
        started = time.monotonic()
        task = self._task_doc.result() if self._task_doc is not None else self._fetch()
        heading = run_heading(task, self.attempt, self.worker)
        if heading is not None:
            self._line(heading)
        self.note(f"task {self.task_id} pulled from queue {self.queue or '-'} by worker {self.worker}")
        watch = self._start_watch(task)  # from here on: the lease is renewed, an abort request is seen
        try:
            prepared = self._prepare(task)
            if isinstance(prepared, Outcome):
                return prepared
            self.timings["build_s"] = time.monotonic() - started
            recording = _in_thread(lambda: self._record_task_edits(task, prepared), "record-source")
            stopped = self._stopped_before_start(watch)
            if stopped is not None:
                recording.result()
                self._record_frozen(task, prepared.frozen)
                return stopped
            return self._execute(task, prepared, watch, recording)
        finally:
            watch.stop()

    def build_only(self, target: Path) -> BuiltTask:
        """`shipyard build`: the environment on this machine, without running anything."""
        from agent.execution.local import LocalExecutor

        self.target = target
        executor = LocalExecutor(self._context(), env_cache=self.env_cache, repo_cache=self.repo_cache,
                                 standalone=True)
        return executor.prepare(self._fetch()).detail

    # -- helpers --------------------------------------------------------------------------
    def note(self, text: str) -> None:
        """A line of the run's own: into the task's console, and once on the agent's terminal
        (its echo where it has one - the daemon's console - else its log, never both)."""
        self._line(f"shipyard: {text}", text)

    def _line(self, line: str, logged: str | None = None) -> None:
        if self.shipper is not None:
            self.shipper.add(line, "info")
        if self.echo:
            self.echo(self.redactor.redact(line))
        else:
            log.info("%s", self.redactor.redact(logged or line))

    def _ending(self, outcome: Outcome) -> str:
        """The console's last line: how the run ended and why (a failure's reason is read here first)."""
        if self.attempt is not None and outcome.kind in RETRYABLE:
            return (f"task {self.task_id} run {self.attempt} ended: {outcome.status_reason}; handed back to "
                    "the server, which re-queues it for another run while runs are left")
        return f"task {self.task_id} ended {outcome.status}: {outcome.status_reason}"

    def _mint_task_key(self, given: TaskKey | None = None) -> None:
        self.task_key = given if given is not None else self.task_keys.mint(self.task_id)
        if self.task_key.minted:
            self.redactor = self.redactor.with_secrets([self.task_key.secret_key])
            log.info("task %s runs with its own key %s (role task, revoked when the run ends)",
                     self.task_id, self.task_key.access_key)

    def _context(self) -> RunContext:
        """What the executor starts the task with: the run's own key, never the agent's
        (unless the server could not mint one; see agent/taskkey.py)."""
        api = self.settings.api
        connection = taskenv.Connection(api.api_server, api.files_server, api.web_server, self.task_key.access_key,
                                        self.task_key.secret_key, self.worker)
        return RunContext(settings=self.settings, task_id=self.task_id, target=self.target, connection=connection,
                          extra_env={**self.settings.agent.extra_env, **self.slot_env}, gpus=self.gpus,
                          note=self.note, attempt=self.attempt)

    def _executor(self) -> Executor[Any]:
        if self.executor_factory is not None:
            return self.executor_factory(self._context())
        if self.settings.agent.docker.enabled:
            from agent.execution.docker import DockerExecutor

            return DockerExecutor(self._context(), repo_cache=self.repo_cache)
        from agent.execution.local import LocalExecutor

        return LocalExecutor(self._context(), env_cache=self.env_cache, repo_cache=self.repo_cache)

    def _start_shipper(self) -> LogShipper:
        spool = self.settings.agent.work_dir / "spool" / f"{self.task_id}.jsonl"
        spool.parent.mkdir(parents=True, exist_ok=True)
        agent = self.settings.agent
        return LogShipper(self._send_events, task_id=self.task_id, worker=self.worker, spool_path=spool,
                          redactor=self.redactor, batch_ms=agent.log_batch_ms,
                          batch_bytes=agent.log_batch_bytes).start()

    def _send_events(self, events: list[dict]) -> object:
        faults.checkpoint("during_log_flush")
        if self.attempt is not None:  # fenced: the server refuses lines from a superseded claim
            events = [{**event, "attempt": self.attempt} for event in events]
        return self.api.add_events(events)

    def _max_runtime(self, task: dict) -> float | None:
        """The smallest of: the task's Shipyard/max_runtime_s, its queue's limit, the agent's."""
        agent = self.settings.agent
        item = ((task.get("hyperparams") or {}).get("Shipyard") or {}).get("max_runtime_s") or {}
        candidates = [item.get("value") if isinstance(item, dict) else item,
                      agent.queue_max_runtime_s.get(self.queue or ""), agent.max_runtime_s]
        limits = []
        for value in candidates:
            try:
                if value not in (None, "") and float(value) > 0:
                    limits.append(float(value))
            except (TypeError, ValueError):
                self.note(f"ignoring a maximum run time that is not a number: {value!r}")
        return min(limits) if limits else None

    def _close_shipper(self) -> None:
        assert self.shipper is not None
        report = self.shipper.close(timeout_s=60)
        if self.log_stats is not None:
            self.log_stats(report.stats)
        if not report.complete:
            log.error("task %s: %d log lines not delivered yet (spool: %s, error: %s)", self.task_id,
                      report.lines_undelivered, report.spool_path, report.error)
        self.shipper = None

    def _fetch(self) -> dict:
        return self.api.call("tasks.get_by_id", {"task": self.task_id})["task"]

    def _prepare(self, task: dict) -> Prepared | Outcome:
        """The executor's prepare step, its failures turned into outcomes."""
        faults.checkpoint("during_build")
        try:
            self.executor = self._executor()
            return self.executor.prepare(task)
        except TaskError as exc:
            return Outcome(TaskStatus.FAILED, exc.kind, exc.reason)
        except InfrastructureError as exc:
            return Outcome(TaskStatus.FAILED, OutcomeKind.INFRASTRUCTURE, exc.reason)
        except OSError as exc:  # disk full, permissions, a vanished cache dir: the machine's fault
            return Outcome(TaskStatus.FAILED, OutcomeKind.INFRASTRUCTURE, f"the environment could not be built on this machine: {exc}")

    def _stopped_before_start(self, watch: TaskWatch) -> Outcome | None:
        if watch.triggered:
            assert watch.abort_kind is not None
            status = TaskStatus.FAILED if watch.abort_kind in (OutcomeKind.TIMED_OUT, OutcomeKind.LEASE_LOST) else TaskStatus.STOPPED
            return Outcome(status, watch.abort_kind, f"{watch.abort_reason} (before the task started)")
        if self.should_abort():
            kind, reason = self.shutdown_abort
            return Outcome(TaskStatus.STOPPED, kind, f"{reason} (before the task started)")
        return None

    def _start_watch(self, task: dict) -> TaskWatch:
        agent = self.settings.agent
        keepalive = (lambda: self.task_keys.extend(self.task_key)) if self.task_key.minted else None
        return TaskWatch(self.api, self.task_id, check_s=self.watch_check_s, ping_s=agent.ping_s,
                         max_runtime_s=self._max_runtime(task), attempt=self.attempt, lease_s=agent.lease_s,
                         keepalive=keepalive, keepalive_s=self.task_keys.renew_every_s).start()

    def _record_task_edits(self, task: dict, prepared: Prepared) -> None:
        """The task's edits before the spawn (both are read by the task's SDK when it starts), on
        their own thread while the run marks the task running (issue 22: one round trip less
        before the spawn)."""
        self._record_source(task, prepared.workspace.commit, prepared.runtime)
        self._default_output(task)

    def _record_source(self, task: dict, commit: str | None, runtime: Mapping[str, str] | None) -> None:
        """Record the resolved commit and (runtime info) where the environment came from. Before
        the spawn: the task's SDK may edit its runtime info too, and this edit replaces it whole."""
        script = task.get("script") or {}
        edit: dict[str, Any] = {}
        if commit and commit != script.get("version_num"):
            edit["script"] = {"version_num": commit}
        if runtime:
            edit["runtime"] = {**(task.get("runtime") or {}), **runtime}
        try:
            if edit:
                self.api.call("tasks.edit", {"task": self.task_id, "force": True, **edit, **fenced(self.attempt)})
        except ServerError as exc:
            self.note(f"could not record the environment's source: {exc}")

    def _record_frozen(self, task: dict, frozen: list[str] | None) -> None:
        """Record the frozen requirements. After the spawn, while the task's interpreter starts
        (issue 24: a round trip off the pickup path): a record for the task's page that the task
        itself neither reads nor writes when it runs under an agent."""
        if not frozen:
            return
        original = ((task.get("script") or {}).get("requirements") or {}).get("pip")
        try:
            self.api.call("tasks.set_requirements", {"task": self.task_id, "requirements": {
                "pip": frozen, "org_pip": original if original is not None else "", "conda": ""}, **fenced(self.attempt)})
        except (ServerError, ServerUnreachable) as exc:
            self.note(f"could not record the frozen environment: {exc}")

    def _default_output(self, task: dict) -> None:
        """A task with no output destination gets the agent's sdk.development.default_output_uri
        (agent/execution/taskconf.py says why the agent, not the task's SDK, records it)."""
        uri = taskconf.default_output_uri(self.settings.sdk)
        if not uri or (task.get("output") or {}).get("destination"):
            return
        try:
            self.api.call("tasks.edit", {"task": self.task_id, "force": True, "output": {"destination": uri},
                                         **fenced(self.attempt)})
            self.note(f"artifacts and models go to {uri} (sdk.development.default_output_uri of this agent)")
        except ServerError as exc:
            self.note(f"could not set the task's output destination to {uri}: {exc}")

    def _execute(self, task: dict, prepared: Prepared, watch: TaskWatch, recording: Future[None]) -> Outcome:
        """Mark the task running while `recording` (its edits) is in flight; both done, spawn it."""
        assert self.executor is not None and self.shipper is not None
        try:
            lifecycle.mark_started(self.api, self.task_id, "running", self.attempt)
        except ServerError as exc:
            if exc.subcode != Subcode.STALE_CLAIM:
                raise
            # handed back (a preemption asked of it while it prepared) or reaped: it is not ours to start
            return Outcome(TaskStatus.FAILED, OutcomeKind.LEASE_LOST,
                           f"the server took this claim back before the task started ({exc})")
        finally:
            recording.result()   # its error first, as when the edits went before the mark
        shipper = self.shipper
        try:
            launched = self.executor.start(task, prepared)
        except TaskError as exc:
            self._record_frozen(task, prepared.frozen)
            return Outcome(TaskStatus.FAILED, exc.kind, exc.reason)
        except InfrastructureError as exc:
            self._record_frozen(task, prepared.frozen)
            return Outcome(TaskStatus.FAILED, OutcomeKind.INFRASTRUCTURE, exc.reason)
        oom = OomSpotter(self.slot_env)
        readers = [OutputReader(launched.stdout_fd, _first_at_once(shipper, "info", oom.see), joined=True).start(),
                   OutputReader(launched.stderr_fd, _first_at_once(shipper, "error", oom.see), joined=True).start()]
        recording = _in_thread(lambda: self._record_frozen(task, prepared.frozen), "record-frozen")
        try:
            abort = self._supervise(launched, watch, lambda: all(reader.done.is_set() for reader in readers))
            if abort is None:
                self._record_exit(launched.wait(0))
        finally:
            watch.stop()
            for reader in readers:
                reader.join(10)
            launched.close()
            futures_wait([recording])
        result = self.executor.finish(prepared, launched)
        if result.frozen and not prepared.frozen:
            self._record_frozen(task, result.frozen)
        if abort is None and result.exit.returncode != 0 and oom.request_mb is not None and oom.seen:
            return self._outgrew(oom.request_mb, result)
        return self._outcome(result, abort)

    def _outgrew(self, request_mb: int, result: RunResult) -> Outcome:
        """A packed task that ran out of GPU memory: handed back, marked to run alone next time."""
        try:
            rows = self.api.call("tasks.get_all", {"id": [self.task_id], "only_fields": ["runtime"]}).get("tasks") or []
            runtime = dict((rows[0].get("runtime") or {}) if rows else {})
            self.api.call("tasks.edit", {"task": self.task_id, "force": True,
                                         "runtime": {**runtime, EXCEEDED_FIELD: request_mb}, **fenced(self.attempt)})
        except (ServerError, ServerUnreachable) as exc:
            self.note(f"could not mark the task to run alone next time: {exc}")
        return Outcome(TaskStatus.STOPPED, OutcomeKind.INFRASTRUCTURE,
                       f"GPU out of memory on a shared GPU: the task needs more than its request of {request_mb} MB "
                       f"(runtime.{REQUEST_FIELD}); handed back to run alone on a whole GPU", result.exit.returncode)

    def _record_exit(self, code: int | None) -> None:
        """Tell the server at once that the process ended, before flushing logs and reporting:
        if this agent dies in between, the task is ended as it exited, not run again."""
        if self.attempt is None or code is None:
            return
        try:
            self.api.call("tasks.record_exit", {"task": self.task_id, "attempt": self.attempt,
                                                "exit_code": code}, deadline_s=5)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("task %s: could not record its exit code yet: %s", self.task_id, exc)

    def _supervise(self, launched: Launched, watch: TaskWatch,
                   output_closed: Callable[[], bool]) -> tuple[str, str] | None:
        # Waits on the watch's abort (woken at once) between looks at the process, every 50 ms
        # (as often as Popen.wait(timeout) looks itself). Once the task has closed its output it
        # is most likely exiting: then the process's own wait, which notices the exit within a
        # few ms, for 10 ms at a time (the end of a task was up to 50 ms late; issue 24).
        while launched.wait(0) is None:
            if output_closed():
                launched.wait(0.01)
            else:
                watch.fired.wait(0.05)
            abort = (watch.abort_kind, watch.abort_reason) if watch.abort_kind is not None else None
            if abort is None and self.should_abort():
                abort = self.shutdown_abort
            abort = abort or self.stop_request
            if abort is not None:
                if abort[0] == OutcomeKind.PREEMPTED:
                    self._preempt(launched, abort[1])
                self._stop(launched, abort[1])
                return abort
        launched.reap()
        return None

    def _preempt(self, launched: Launched, reason: str) -> None:
        """The notice (agent/execution/preempt.py), then the grace for the task to checkpoint and exit."""
        notice = Notice.plan(self.settings.agent, self.queue, reason)
        try:
            notice.write(self.target / PREEMPT_FILE_NAME)
        except OSError as exc:
            self.note(f"could not write the preemption notice file: {exc}")
        launched.signal(notice.signum)
        self.note(f"preempting the task ({reason}): {notice.describe()}")
        while time.time() < notice.deadline and launched.wait(0.1) is None:
            pass

    def _stop(self, launched: Launched, reason: str) -> None:
        if launched.wait(0) is None:
            self.note(f"stopping the task: {reason} (SIGTERM, then SIGKILL after "
                      f"{self.settings.agent.abort_grace_s:g}s)")
        launched.terminate(self.settings.agent.abort_grace_s)
        launched.reap()

    def _outcome(self, result: RunResult, abort: tuple[str, str] | None) -> Outcome:
        info = result.exit
        if abort is not None:
            kind, reason = abort
            status = TaskStatus.FAILED if kind in (OutcomeKind.TIMED_OUT, OutcomeKind.LEASE_LOST) else TaskStatus.STOPPED
            return Outcome(status, kind, reason + (" (killed after the grace period)" if info.killed else ""),
                           info.returncode)
        if result.failure is not None:
            return result.failure
        if info.returncode == 0:
            return Outcome(TaskStatus.COMPLETED, OutcomeKind.DONE, "worker execution done", 0)
        if info.signalled:
            return Outcome(TaskStatus.FAILED, OutcomeKind.USER_ERROR, f"the task process was killed by signal {info.signalled}"
                           + (" (out of memory?)" if info.signalled == 9 else ""), info.returncode)
        return Outcome(TaskStatus.FAILED, OutcomeKind.USER_ERROR, f"the task process exited with code {info.returncode}; "
                       "see the end of its console log", info.returncode)


class OomSpotter:
    """Watches a packed task's output for the frameworks' out-of-memory errors (a run on a whole
    GPU is left alone: its OOM is the task's own failure)."""

    PATTERN = re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA_ERROR_OUT_OF_MEMORY|RESOURCE_EXHAUSTED")

    def __init__(self, slot_env: Mapping[str, str]):
        value = slot_env.get("SHIPYARD_GPU_MEMORY_REQUEST_MB", "")
        self.request_mb = int(value) if value.isdigit() else None
        self.seen = False

    def see(self, text: str) -> str:
        if self.request_mb is not None and not self.seen and self.PATTERN.search(text):
            self.seen = True
        return text


def _in_thread(fn: Callable[[], _T], name: str = "fetch-task") -> Future[_T]:
    """`fn()` on a daemon thread; its answer (or its exception) in the future."""
    future: Future[_T] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - raised again where the result is read
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def _first_at_once(shipper: LogShipper, level: str, see: Callable[[str], str]) -> Callable[[str], None]:
    """A reader's sink: its first chunk (the task's first output) is shipped at once, the rest
    batched (issue 24: enqueue -> first line readable through the API); `see` looks at each
    chunk first (the packed task's OOM spotter)."""
    first = [True]

    def add(text: str) -> None:
        at_once, first[0] = first[0], False
        shipper.add(see(text), level, at_once=at_once)

    return add


def run_heading(task: Mapping[str, Any], attempt: int | None, worker: str) -> str | None:
    """The line a re-run's console starts with, so runs do not run together: which run this is
    (counted from 1 since a person last enqueued the task, as the server numbers them), where, and
    how the previous one ended. `attempt` is the claim's fence; its history entry holds the run."""
    if attempt is None:
        return None
    history = [entry for entry in task.get("shipyard_attempts") or [] if isinstance(entry, dict)]
    index = next((i for i, entry in enumerate(history) if entry.get("attempt") == attempt), None)
    this = history[index] if index is not None else {}
    run = this.get("run", attempt)
    previous = history[index - 1] if index else {}
    resumed = _resumed(task, str(previous.get("end") or "")) if index else ""
    if not isinstance(run, int) or (run < 2 and not resumed):   # a preempted run is not counted: same number
        return None
    limit = this.get("max_runs")
    number = f"run {run}" + (f" of {limit}" if isinstance(limit, int) and limit >= run else "")
    after = previous.get("end") or f"run {run - 1} ended without a report"
    return f"--- {number} on worker {worker}, {resumed}after {after} ---"


def _resumed(task: Mapping[str, Any], previous_end: str) -> str:
    """"resumed after preemption N, " when the previous run was preempted. `runtime.preemptions`
    (counted by the server's scheduler) gives N; the previous run's end says it was this time."""
    count = (task.get("runtime") or {}).get("preemptions")
    counted = isinstance(count, int) and not isinstance(count, bool) and count > 0
    if OutcomeKind.PREEMPTED not in previous_end and not (counted and not previous_end):
        return ""
    return f"resumed after preemption {count}, " if counted else "resumed after preemption, "


def safe_report(api: TaskServer, task_id: str, outcome: Outcome, worker: str, attempt: int | None = None) -> None:
    try:
        lifecycle.report_outcome(api, task_id, outcome, worker, attempt)
    except (ServerError, ServerUnreachable) as exc:
        log.error("could not report the end of task %s: %s", task_id, exc)
