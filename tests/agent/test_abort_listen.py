"""The abort heard through the long-poll (`tasks.wait_status`, the `task_watch` extension), and
the check every check_s where the server does not offer it. Speed is measured in
bench/bench_abort.py, never asserted here: the runs below check every hour (watch_check_s), so
only the long-poll can deliver the abort."""
from __future__ import annotations

import threading
import time

from agent.daemon.loop import Daemon
from agent.taskserver.memory import EXTENSIONS, InMemoryTaskServer
from shipyard.signals import Shutdown
from tests.agent.test_inprocess import FakeExecutor, _queued, settings  # noqa: F401 - a fixture

WATCH = {"endpoint": "tasks.wait_status", "field": "wait_s", "max_s": 60}


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _run_and_stop(server: InMemoryTaskServer, settings, check_s: float) -> str:  # noqa: F811
    task, _queue = _queued(server, "hang")
    daemon = Daemon(server, settings, ["q"], shutdown=Shutdown(), max_tasks=1, executor_factory=FakeExecutor,
                    watch_check_s=check_s)
    thread = threading.Thread(target=daemon.work)
    thread.start()
    _wait(lambda: server.tasks[task]["status_message"] == "running")
    server.call("tasks.stop", {"task": task})
    thread.join(20)
    assert not thread.is_alive()
    return task


def test_abort_reaches_the_run_through_the_long_poll(settings):  # noqa: F811
    server = InMemoryTaskServer(extensions={**EXTENSIONS, "task_watch": WATCH})
    task = _run_and_stop(server, settings, check_s=3600)
    assert server.status(task) == "stopped"
    assert "abort requested" in server.tasks[task]["status_reason"]
    assert "tasks.wait_status" in server.endpoints()


def test_a_deleted_task_is_heard_through_the_long_poll(settings):  # noqa: F811
    server = InMemoryTaskServer(extensions={**EXTENSIONS, "task_watch": WATCH})
    task, _queue = _queued(server, "hang")
    daemon = Daemon(server, settings, ["q"], shutdown=Shutdown(), max_tasks=1, executor_factory=FakeExecutor,
                    watch_check_s=3600)
    thread = threading.Thread(target=daemon.work)
    thread.start()
    _wait(lambda: server.tasks[task]["status_message"] == "running")
    with server._changed:
        del server.tasks[task]
        server._changed.notify_all()
    thread.join(20)
    assert not thread.is_alive()


class _Refusing(InMemoryTaskServer):
    """Says it offers the long-poll but refuses the endpoint (as an older server would)."""

    _tasks_wait_status = None


def test_without_the_endpoint_the_check_still_stops_the_task(settings):  # noqa: F811
    server = _Refusing(extensions={**EXTENSIONS, "task_watch": WATCH})
    task = _run_and_stop(server, settings, check_s=0.05)
    assert server.status(task) == "stopped"
    assert "tasks.wait_status" not in server.endpoints()   # refused before it was recorded


def test_the_server_answers_a_status_change_at_once(server, api):
    """The real server: a waiting tasks.wait_status returns when the task is stopped, long before
    its wait_s (30 s; the join below gives it 20)."""
    task = api.call("tasks.create", {"name": "listen", "type": "training"})["id"]
    first = api.call("tasks.wait_status", {"task": task, "wait_s": 0})
    assert first == {"task": {"id": task, "status": "created", "status_message": ""}, "changed": False}
    answers: list = []
    waiting = threading.Thread(target=lambda: answers.append(api.call(
        "tasks.wait_status", {"task": task, "status": "created", "status_message": "", "wait_s": 30},
        timeout=45)))
    waiting.start()
    time.sleep(0.3)
    api.call("tasks.stop", {"task": task, "force": True})
    waiting.join(20)
    assert answers and answers[0]["changed"] and answers[0]["task"]["status"] == "stopped"
    api.call("tasks.delete", {"task": task, "force": True})
    assert api.call("tasks.wait_status", {"task": task, "status": "stopped", "wait_s": 5}) == {
        "task": None, "changed": True}
