"""Prepare while queued, the preparer's own decisions (agent/daemon/prepare.py), on a small
stand-in for the queue API: which queued tasks it looks at, when it gives way, what it reports.
The builds themselves run against a real server and daemon in test_prepare_queued.py."""
from __future__ import annotations

import subprocess
import time
from dataclasses import replace

from agent.daemon.poller import Queue
from agent.daemon.prepare import MAX_STARTS, Preparer
from sandbox.env_cache import EnvCache
from sandbox.repo_cache import RepoCache
from shipyard.client.config import load_settings
from shipyard.protocol import PrepareState


class Queues:
    """queues.get_by_id over fixed entries; nothing else is called by a scan."""

    def __init__(self, entries: dict[str, list[str]]):
        self.entries = entries

    def call(self, endpoint, data=None, **_kw):
        assert endpoint == "queues.get_by_id", endpoint
        return {"queue": {"entries": [{"task": t} for t in self.entries[data["queue"]]]}}


def preparer(tmp_path, entries, *, running=0, **prepare) -> tuple[Preparer, list[str]]:
    settings = load_settings(overrides={"agent.work_dir": str(tmp_path / "w"), "agent.cache_dir": str(tmp_path / "c"),
                                        "agent.prepare.max_load": "0"})
    settings = replace(settings, agent=replace(settings.agent, prepare=replace(settings.agent.prepare, **prepare)))
    queues = [Queue(name, name) for name in entries]
    prep = Preparer(Queues(entries), settings, queues, EnvCache(tmp_path / "c" / "venvs"), RepoCache(tmp_path / "g"),
                    running=lambda: running)
    seen: list[str] = []
    prep._prepare = seen.append   # type: ignore[method-assign] - the build path is the e2e test's
    return prep, seen


def test_it_looks_at_the_head_of_each_queue_in_order_and_never_twice(tmp_path):
    prep, seen = preparer(tmp_path, {"q1": ["a", "b", "c", "d"], "q2": ["e", "a"]}, depth=2)
    prep.states["b"] = PrepareState.READY
    prep.done.add("e")
    prep.starts["x"] = MAX_STARTS
    prep.scan()
    assert seen == []             # a task is prepared once it has waited one pass
    prep.scan()
    assert seen == ["a"]          # b is ready, c and d are past the depth, e failed before
    assert prep.report() == {"b": "ready"}


def test_tasks_that_left_the_queue_leave_the_report(tmp_path):
    prep, _seen = preparer(tmp_path, {"q": ["a"]})
    prep.states.update({"a": PrepareState.READY, "gone": PrepareState.FAILED})
    prep.scan()
    assert prep.report() == {"a": "ready"}


def test_no_room_while_busy_unless_allowed_and_never_when_off(tmp_path):
    assert preparer(tmp_path, {"q": ["a"]}, running=1, while_busy=True)[0]._room()
    assert not preparer(tmp_path, {"q": ["a"]}, running=1, while_busy=False)[0]._room()
    assert preparer(tmp_path, {"q": ["a"]}, running=0, while_busy=False)[0]._room()
    assert not preparer(tmp_path, {"q": ["a"]}, enabled=False)[0]._room()


def test_a_claim_of_another_task_kills_the_build_one_of_the_same_task_does_not(tmp_path):
    prep, _seen = preparer(tmp_path, {"q": []})
    build = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    try:
        prep.current, prep._proc = "b", build
        prep.claimed("b")
        time.sleep(0.2)
        assert build.poll() is None          # the pickup of b waits for this very build
        prep.claimed("other")
        assert build.wait(5) != 0            # killed, with its process group
    finally:
        if build.poll() is None:
            build.kill()


def test_a_task_claimed_while_its_build_is_planned_gets_no_build(tmp_path):
    prep, _seen = preparer(tmp_path, {"q": ["b"]})
    prep.claimed("b")                     # between the plan and the build: its pickup builds
    assert prep._run_build("b", None) == (None, "")   # type: ignore[arg-type] - never reaches the job
    assert prep._proc is None
