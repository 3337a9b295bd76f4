"""Run one task end to end: fetch, rebuild, execute, ship logs, report the outcome.

`TaskRun.run()` reads as the sequence of steps; each step is a small method. Every failure
ends in an `Outcome` with a reason a person can act on; nothing here lets a task end
"completed" unless its process exited 0.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from agent import lifecycle, taskenv
from agent.api import ApiClient
from agent.build import BuiltTask, build_task
from agent.config import Settings
from agent.lifecycle import COMPLETED, FAILED, STOPPED, Outcome
from agent.logship import LogShipper, OutputReader
from agent.process import Child
from agent.redact import Redactor
from agent.watch import TaskWatch
from sandbox.env_cache import EnvCache
from sandbox.repo_cache import RepoCache
from shipyard import faults
from shipyard.errors import InfrastructureError, ServerError, ServerUnreachable, TaskError

log = logging.getLogger("shipyard.agent.runner")


class TaskRun:
    def __init__(self, api: ApiClient, settings: Settings, task_id: str, *, queue: str | None = None,
                 should_abort: Callable[[], bool] = lambda: False, env_cache: EnvCache | None = None,
                 repo_cache: RepoCache | None = None, echo: Callable[[str], None] | None = None,
                 attempt: int | None = None, slot_env: Mapping[str, str] | None = None,
                 gpus: Sequence[int] = ()):
        self.api = api
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

    # -- the steps ------------------------------------------------------------------------
    def run(self) -> Outcome:
        self.shipper = self._start_shipper()
        try:
            outcome = self._run_steps()
        finally:
            self._close_shipper()
            shutil.rmtree(self.target, ignore_errors=True)
        self.note(f"task {self.task_id} ended {outcome.status}: {outcome.status_reason}")
        lifecycle.report_outcome(self.api, self.task_id, outcome, self.worker, self.attempt)
        return outcome

    def _run_steps(self) -> Outcome:
        started = time.monotonic()
        task = self._fetch()
        self.note(f"task {self.task_id} pulled from queue {self.queue or '-'} by worker {self.worker}")
        try:
            built = self._build(task)
        except TaskError as exc:
            return Outcome(FAILED, exc.kind, exc.reason)
        except InfrastructureError as exc:
            return Outcome(FAILED, "infrastructure", exc.reason)
        except OSError as exc:  # disk full, permissions, a vanished cache dir: the machine's fault
            return Outcome(FAILED, "infrastructure", f"the environment could not be built on this machine: {exc}")
        self.timings["build_s"] = time.monotonic() - started
        self._write_back(task, built)
        if self.should_abort():
            return Outcome(STOPPED, "agent_shutdown", "the agent was shut down before the task started")
        return self._execute(task, built)

    def build_only(self, target: Path) -> BuiltTask:
        """`shipyard build`: the environment without running anything."""
        self.target = target
        return self._build(self._fetch())

    # -- helpers --------------------------------------------------------------------------
    def note(self, text: str) -> None:
        line = f"shipyard: {text}"
        if self.shipper is not None:
            self.shipper.add(line, "info")
        if self.echo:
            self.echo(self.redactor.redact(line))
        log.info("%s", self.redactor.redact(text))

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
        if not report.complete:
            log.error("task %s: %d log lines not delivered yet (spool: %s, error: %s)", self.task_id,
                      report.lines_undelivered, report.spool_path, report.error)
        self.shipper = None

    def _fetch(self) -> dict:
        return self.api.call("tasks.get_by_id", {"task": self.task_id})["task"]

    def _build(self, task: dict) -> BuiltTask:
        if self.target.exists():
            shutil.rmtree(self.target)
        self.target.mkdir(parents=True)
        faults.checkpoint("during_build")
        return build_task(task, self.target, self.settings, self.note, env_cache=self.env_cache,
                          repo_cache=self.repo_cache)

    def _write_back(self, task: dict, built: BuiltTask) -> None:
        """Record what was really used: the resolved commit and the frozen requirements."""
        script = task.get("script") or {}
        original = (script.get("requirements") or {}).get("pip")
        try:
            if built.env.frozen:
                self.api.call("tasks.set_requirements", {"task": self.task_id, "requirements": {
                    "pip": built.env.frozen, "org_pip": original if original is not None else "", "conda": ""}})
            if built.workspace.commit and built.workspace.commit != script.get("version_num"):
                self.api.call("tasks.edit", {"task": self.task_id, "force": True,
                                             "script": {"version_num": built.workspace.commit}})
        except ServerError as exc:
            self.note(f"could not record the frozen environment: {exc}")

    def _child_env_and_argv(self, task: dict, built: BuiltTask) -> tuple[dict[str, str], list[str]]:
        api = self.settings.api
        conn = taskenv.Connection(api.api_server, api.files_server, api.web_server, api.access_key,
                                  api.secret_key, self.worker)
        env = taskenv.build_env(os.environ, conn, self.task_id, built.venv,
                                {**self.settings.agent.extra_env, **self.slot_env}, taskenv.task_env_section(task))
        lines = [r.line for r in built.requirements.requirements]
        with_args = not taskenv.uses_sdk(built.workspace.entry_point, lines)
        if built.workspace.module:
            argv = [str(built.env.python), "-m", built.workspace.module]
            argv += taskenv.args_from_hyperparams(task) if with_args else []
        else:
            argv = taskenv.build_argv(built.env.python, built.workspace.entry_point, task, with_args)
        return env, argv

    def _execute(self, task: dict, built: BuiltTask) -> Outcome:
        env, argv = self._child_env_and_argv(task, built)
        lifecycle.mark_started(self.api, self.task_id, "running", self.attempt)
        self.note("running: " + " ".join(argv))
        assert self.shipper is not None
        shipper = self.shipper
        try:
            child = Child(argv, built.workspace.working_dir, env)
        except OSError as exc:
            return Outcome(FAILED, "user_error", f"could not start {argv[0]}: {exc}")
        readers = [OutputReader(child.proc.stdout.fileno(), lambda line: shipper.add(line, "info")).start(),
                   OutputReader(child.proc.stderr.fileno(), lambda line: shipper.add(line, "error")).start()]
        agent = self.settings.agent
        watch = TaskWatch(self.api, self.task_id, check_s=1.0, ping_s=agent.ping_s,
                          max_runtime_s=self._max_runtime(task), attempt=self.attempt,
                          lease_s=agent.lease_s).start()
        try:
            abort = self._supervise(child, watch)
        finally:
            watch.stop()
            for reader in readers:
                reader.join(10)
            child.proc.stdout.close()
            child.proc.stderr.close()
        return self._outcome(child, abort)

    def _supervise(self, child: Child, watch: TaskWatch) -> tuple[str, str] | None:
        while child.wait(0.1) is None:
            abort = (watch.abort_kind, watch.abort_reason) if watch.triggered else None
            if abort is None and self.should_abort():
                abort = ("agent_shutdown", "the agent was asked to stop twice and aborted the task")
            if abort is not None:
                self.note(f"stopping the task: {abort[1]} (SIGTERM, then SIGKILL after "
                          f"{self.settings.agent.abort_grace_s:g}s)")
                child.terminate(self.settings.agent.abort_grace_s)
                child.reap_group()
                return abort
        child.reap_group()
        return None

    def _outcome(self, child: Child, abort: tuple[str, str] | None) -> Outcome:
        info = child.exit_info()
        if abort is not None:
            kind, reason = abort
            status = FAILED if kind in ("timed_out", "lease_lost") else STOPPED
            return Outcome(status, kind, reason + (" (killed after the grace period)" if info.killed else ""),
                           info.returncode)
        if info.returncode == 0:
            return Outcome(COMPLETED, "done", "worker execution done", 0)
        if info.signalled:
            return Outcome(FAILED, "user_error", f"the task process was killed by signal {info.signalled}"
                           + (" (out of memory?)" if info.signalled == 9 else ""), info.returncode)
        return Outcome(FAILED, "user_error", f"the task process exited with code {info.returncode}; "
                       "see the end of its console log", info.returncode)


def safe_report(api: ApiClient, task_id: str, outcome: Outcome, worker: str, attempt: int | None = None) -> None:
    try:
        lifecycle.report_outcome(api, task_id, outcome, worker, attempt)
    except (ServerError, ServerUnreachable) as exc:
        log.error("could not report the end of task %s: %s", task_id, exc)
