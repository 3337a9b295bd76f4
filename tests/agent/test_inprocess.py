"""The daemon and a task run in-process, against InMemoryTaskServer and a fake executor: no
server process, no child process, each test well under a second."""
from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from agent.daemon.loop import Daemon
from agent.execution.contract import ExitStatus, Prepared, RunContext, RunResult
from agent.execution.runner import TaskRun
from agent.taskserver.memory import InMemoryTaskServer
from sandbox.git_workspace import Workspace
from shipyard.client.config import Settings, load_settings
from shipyard.signals import Shutdown


class FakeLaunch:
    """A 'process' that prints one line and exits with the code its task names, or runs until stopped."""

    def __init__(self, code: int | None):
        self.code = code
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        os.write(out_w, b"hello from the task\n")
        os.close(out_w)
        os.close(err_w)
        self.stdout_fd, self.stderr_fd = out_r, err_r
        self.terminated = False

    def wait(self, timeout: float | None = None) -> int | None:
        if self.code is None and not self.terminated:
            time.sleep(timeout or 0)
            return None
        return self.code if not self.terminated else -15

    def terminate(self, grace_s: float) -> None:
        self.terminated = True

    def signal(self, signum: int) -> None:
        pass

    def reap(self) -> None:
        pass

    def close(self) -> None:
        for fd in (self.stdout_fd, self.stderr_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class FakeExecutor:
    def __init__(self, context: RunContext):
        self.context = context

    def prepare(self, task: dict) -> Prepared:
        target = self.context.target
        return Prepared(workspace=Workspace(target, target, target / "main.py", None, None), frozen=None)

    def start(self, task: dict, prepared: Prepared) -> FakeLaunch:
        entry = (task.get("script") or {}).get("entry_point", "exit:0")
        return FakeLaunch(None if entry == "hang" else int(entry.split(":")[1]))

    def finish(self, prepared: Prepared, launched: FakeLaunch) -> RunResult:
        code = launched.wait(0)
        return RunResult(ExitStatus(code if code is not None else -15, signalled=15 if launched.terminated else None))

    def cleanup(self) -> None:
        pass


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    env = {"HOME": str(tmp_path), "SHIPYARD_WORK_DIR": str(tmp_path / "work"), "SHIPYARD_CACHE_DIR": str(tmp_path / "c"),
           "CLEARML_API_ACCESS_KEY": "AGENTKEY", "CLEARML_API_SECRET_KEY": "agent-secret"}
    return load_settings({"agent.lease_s": 0.4, "agent.abort_grace_s": 0.1, "agent.long_poll_s": 0.2,
                          "agent.status_report_s": 0.2, "agent.ping_s": 0.2}, env=env)


@pytest.fixture
def server() -> InMemoryTaskServer:
    return InMemoryTaskServer()


def _queued(server: InMemoryTaskServer, entry: str, queue_name: str = "q") -> tuple[str, str]:
    queue = next((q["id"] for q in server.queues.values() if q["name"] == queue_name), None)
    queue = queue or server.call("queues.create", {"name": queue_name})["id"]
    task = server.call("tasks.create", {"name": entry, "script": {"entry_point": entry}})["id"]
    server.call("tasks.enqueue", {"task": task, "queue": queue})
    return task, queue


def _daemon(server: InMemoryTaskServer, settings: Settings, shutdown: Shutdown | None = None,
            max_tasks: int | None = 1) -> Daemon:
    return Daemon(server, settings, ["q"], shutdown=shutdown or Shutdown(), max_tasks=max_tasks,
                  executor_factory=FakeExecutor, watch_check_s=0.02)


def _run(server: InMemoryTaskServer, settings: Settings, task: str, attempt: int | None = None) -> TaskRun:
    return TaskRun(server, settings, task, queue="q", executor_factory=FakeExecutor, watch_check_s=0.02,
                   attempt=attempt)


def test_daemon_claims_runs_and_reports_completed(server, settings):
    task, _queue = _queued(server, "exit:0")
    assert _daemon(server, settings).work() == 0
    assert server.status(task) == "completed"
    assert any("hello from the task" in str(e.get("msg")) for e in server.events)
    assert "workers.register" in server.endpoints() and "workers.unregister" in server.endpoints()


def test_failed_exit_fails_the_task(server, settings):
    task, _queue = _queued(server, "exit:3")
    _daemon(server, settings).work()
    assert server.status(task) == "failed"
    assert "exited with code 3" in server.tasks[task]["status_reason"]


def test_abort_request_while_running_stops_the_task(server, settings):
    task, _queue = _queued(server, "hang")
    daemon = _daemon(server, settings)
    thread = threading.Thread(target=daemon.work)
    thread.start()
    _wait(lambda: server.tasks[task]["status_message"] == "running")
    server.call("tasks.stop", {"task": task})
    thread.join(5)
    assert server.status(task) == "stopped"
    assert server.tasks[task]["status_reason"].startswith("aborted:")


def test_lost_lease_stops_the_run_and_it_reports_nothing(server, settings):
    task, queue = _queued(server, "hang")
    claim = server.call("queues.get_next_task", {"queue": queue, "queues": [queue], "lease_s": 30, "worker": "w"})
    attempt = claim["lease"]["attempt"]
    server.call("tasks.started", {"task": task, "attempt": attempt, "force": True})
    run = _run(server, settings, task, attempt)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(run.run()))
    thread.start()
    _wait(lambda: server.tasks[task]["status_message"] == "running")
    server.call("workers.reconcile", {"worker": "w"})   # the server gives the task back to the queue
    server.call("queues.get_next_task", {"queue": queue, "queues": [queue], "lease_s": 30, "worker": "w2"})
    thread.join(5)
    assert result and result[0].status != "completed"
    assert server.status(task) == "queued"                # the superseded run changed nothing
    assert server.tasks[task]["_attempt"] == 2


def test_lost_agent_requeues_then_fails_after_max_attempts(server, settings):
    task, queue = _queued(server, "exit:0")
    for attempt in (1, 2, 3):
        claim = server.call("queues.get_next_task", {"queue": queue, "queues": [queue], "lease_s": 30, "worker": "w"})
        assert claim["lease"]["attempt"] == attempt
        answer = server.call("workers.reconcile", {"worker": "w"})["released"]
        assert answer == [{"task": task, "outcome": "requeued" if attempt < 3 else "failed"}]
    assert server.status(task) == "failed"
    assert "agent lost 3 time(s)" in server.tasks[task]["status_reason"]


def _console(server: InMemoryTaskServer, task: str) -> list[str]:
    return [line for e in server.events if e.get("task") == task and e.get("type", "log") == "log"
            for line in str(e.get("msg")).split("\n")]


def test_rerun_after_a_lost_agent_starts_with_a_separator(server, settings):
    task, queue = _queued(server, "exit:0")
    server.call("queues.get_next_task", {"queue": queue, "queues": [queue], "lease_s": 30, "worker": "gone:0"})
    server.call("workers.reconcile", {"worker": "gone:0"})   # run 1's agent is lost; the task is queued again
    assert server.tasks[task]["status_reason"].endswith("re-queued for run 2 of 3")
    _daemon(server, settings).work()
    assert server.status(task) == "completed"
    console = _console(server, task)
    assert console[0] == (f"--- run 2 of 3 on worker {settings.agent.worker_id}, after infrastructure: "
                          "worker gone:0 restarted while holding it ---")


def test_failure_reason_is_the_last_console_line(server, settings):
    task, _queue = _queued(server, "exit:3")
    _daemon(server, settings).work()
    last = _console(server, task)[-1]
    assert last == f"shipyard: task {task} ended failed: {server.tasks[task]['status_reason']}"


class BrokenExecutor(FakeExecutor):
    """An agent bug: preparing raises what no step expects."""

    def prepare(self, task: dict) -> Prepared:
        raise RuntimeError("boom in the agent")


def test_agent_error_is_the_last_console_line_too(server, settings):
    task, _queue = _queued(server, "exit:0")
    Daemon(server, settings, ["q"], shutdown=Shutdown(), max_tasks=1, executor_factory=BrokenExecutor,
           watch_check_s=0.02).work()
    assert _console(server, task)[-1] == (f"shipyard: task {task} ended: infrastructure: agent error: "
                                          "RuntimeError: boom in the agent")


def _wait(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class _SlowRecords(InMemoryTaskServer):
    """set_requirements takes a while; when it began and ended is noted."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[str] = []

    def call(self, endpoint: str, data=None, **kwargs):
        if endpoint == "tasks.set_requirements":
            self.marks.append("record begins")
            time.sleep(0.3)
            self.marks.append("record ends")
        return super().call(endpoint, data, **kwargs)


def test_the_build_is_recorded_while_the_task_starts(settings):
    """Issue 24: the frozen requirements go to the server after the spawn, not before it."""
    server = _SlowRecords()
    task, _ = _queued(server, "exit:0")

    class Frozen(FakeExecutor):
        def prepare(self, task: dict) -> Prepared:
            return Prepared(workspace=super().prepare(task).workspace, frozen=["six==1.16.0"])

        def start(self, task: dict, prepared: Prepared) -> FakeLaunch:
            server.marks.append("spawned")
            return super().start(task, prepared)

    run = TaskRun(server, settings, task, queue="q", executor_factory=Frozen, watch_check_s=0.02)
    assert run.run().status == "completed"
    assert server.marks == ["spawned", "record begins", "record ends"]
    assert server.call("tasks.get_by_id", {"task": task})["task"]["script"]["requirements"]["pip"] == ["six==1.16.0"]


def _hand_over_calls(server: InMemoryTaskServer, task: str) -> list[str]:
    names = ("tasks.started", "auth.create_credentials", "tasks.start_run", "tasks.get_by_id")
    return [endpoint for endpoint, body in server.calls if endpoint in names and body.get("task", body.get("label")) == task]


def test_daemon_starts_the_claim_and_mints_its_key_in_one_call(server, settings):
    """Issue 24 (pickup): the claim brings the task's document (`with_task`), one
    `tasks.start_run` marks it started and mints the run's key, then the run's own `running`."""
    task, _queue = _queued(server, "exit:0")
    _daemon(server, settings).work()
    assert _hand_over_calls(server, task) == ["tasks.start_run", "tasks.started"]
    assert server.status(task) == "completed"
    assert [k for k, v in server.keys.items() if v.get("label") == task] != []


def test_a_run_reads_its_document_beside_the_start_when_the_claim_has_none(server, settings):
    task, queue = _queued(server, "exit:0")
    claim = server.call("queues.get_next_task", {"queue": queue, "queues": [queue], "lease_s": 30, "worker": "w"})
    run = _run(server, settings, task, claim["lease"]["attempt"])
    run.prefetch()
    server.call("tasks.started", {"task": task, "attempt": claim["lease"]["attempt"], "force": True})
    assert run.run().status == "completed"
    assert _hand_over_calls(server, task).count("tasks.get_by_id") == 1


def test_daemon_without_start_run_makes_the_two_calls(settings):
    from agent.taskserver.memory import EXTENSIONS

    server = InMemoryTaskServer(extensions={**EXTENSIONS, "task_keys": {"mint": "auth.create_credentials",
                                                                        "role": "task"}})
    task, _queue = _queued(server, "exit:0")
    _daemon(server, settings).work()
    assert _hand_over_calls(server, task) == ["tasks.started", "auth.create_credentials", "tasks.started"]
    assert server.status(task) == "completed"


def test_a_claim_taken_back_while_it_prepares_writes_nothing_and_does_not_start(server, settings):
    """Someone hands the claim back (a preemption answered for the agent, the reaper) while the run
    prepares: the run's own edits and its `running` mark are refused as stale, so the queued task
    keeps what the server wrote (runtime.preemptions) and is not started by the old claim."""
    task, queue = _queued(server, "exit:0")
    claim = server.call("queues.get_next_task", {"queue": queue, "queues": [queue], "lease_s": 30, "worker": "w"})
    attempt = claim["lease"]["attempt"]
    server.call("tasks.started", {"task": task, "attempt": attempt, "force": True})

    class TakenBack(FakeExecutor):
        def prepare(self, doc: dict) -> Prepared:
            server.call("tasks.release", {"task": task, "attempt": attempt, "retry": True, "reason": "preempted: x"})
            server.tasks[task]["runtime"] = {"preemptions": 1}   # what the real server counts on that release
            return Prepared(workspace=super().prepare(doc).workspace, frozen=["six==1.16.0"],
                            runtime={"environment_source": "none"})

    run = TaskRun(server, settings, task, queue="q", executor_factory=TakenBack, watch_check_s=0.02, attempt=attempt)
    outcome = run.run()
    assert outcome.kind == "lease_lost" and "took this claim back" in outcome.reason
    doc = server.tasks[task]
    assert doc["status"] == "queued" and doc["runtime"] == {"preemptions": 1}
    assert "requirements" not in (doc.get("script") or {})
