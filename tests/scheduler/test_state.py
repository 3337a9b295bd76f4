"""The state file: de-duplicated fires written with their mark, attempts, one runner per directory."""
from __future__ import annotations

import pytest

from scheduler.state import Cursor, FireStatus, NewFire, ScheduleMark, StateStore
from shipyard.errors import ConfigError


@pytest.fixture()
def store(tmp_path):
    with StateStore.open(tmp_path / "state") as opened:
        yield opened


def test_fires_are_written_once_per_key_with_the_mark(store):
    written = store.record("schedule:a", [NewFire("k1", 1.0), NewFire("k2", 2.0)], schedule=ScheduleMark(2.0, 3.0))
    assert [f.key for f in written] == ["k1", "k2"]
    again = store.record("schedule:a", [NewFire("k2", 2.0), NewFire("k3", 3.0)], schedule=ScheduleMark(3.0, 4.0))
    assert [f.key for f in again] == ["k3"]
    assert store.record("schedule:b", [NewFire("k1", 1.0)])  # keys are per owner
    assert store.schedule("schedule:a") == ScheduleMark(3.0, 4.0, False)
    assert [f.key for f in store.pending(["schedule:a"])] == ["k1", "k2", "k3"]


def test_a_failed_transaction_writes_nothing(store):
    store.record("trigger:t", cursor=Cursor(since=5.0, position=5.0))
    with pytest.raises(TypeError):  # the context is not JSON
        store.record("trigger:t", [NewFire("e1", 6.0), NewFire("e2", 7.0, context={"bad": object()})],
                     cursor=Cursor(since=5.0, position=9.0))
    assert store.cursor("trigger:t") == Cursor(5.0, 5.0)
    assert store.pending() == []


def test_attempts_finish_and_history(store):
    store.record("schedule:a", [NewFire("k1", 1.0, context={"schedule.name": "a"}),
                                NewFire("k0", 0.5, FireStatus.SKIPPED, "missed")])
    fire = store.pending()[0]
    assert store.begin_attempt(fire.id) == 0
    assert store.begin_attempt(fire.id) == 1
    store.set_task(fire.id, "task1")
    store.finish(fire.id, FireStatus.FIRED, detail="enqueued")
    history = store.history("schedule:a")
    assert [(f.key, f.status, f.task_id, f.attempts) for f in history] == [
        ("k1", FireStatus.FIRED, "task1", 2), ("k0", FireStatus.SKIPPED, None, 0)]
    assert history[0].context == {"schedule.name": "a"}
    assert store.pending() == []
    assert store.count("schedule:a") == {"fired": 1, "skipped": 1}


def test_state_survives_reopening(tmp_path):
    with StateStore.open(tmp_path) as first:
        first.record("schedule:a", [NewFire("k1", 1.0)], schedule=ScheduleMark(1.0, 2.0))
    with StateStore.open(tmp_path) as second:
        assert second.schedule("schedule:a") == ScheduleMark(1.0, 2.0)
        assert [f.key for f in second.pending()] == ["k1"]


def test_one_runner_per_state_directory(tmp_path):
    with StateStore.open(tmp_path) as first, StateStore.open(tmp_path) as second:
        with first.lock(), pytest.raises(ConfigError, match="another scheduler"), second.lock():
            pass
        with second.lock():
            pass
