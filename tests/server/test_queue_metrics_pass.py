"""Queue metrics in a running server are sampled by a pass (server/services/queues/metrics.py),
not inside every enqueue and pop: the changing transaction only marks its queue, the pass samples
every marked queue once a second in one transaction (and once more a second later, so a change
committed while a pass ran is drawn too), and a read samples what this process changed first."""
from __future__ import annotations

import sqlite3
import time

import pytest

from server.services.queues import crud
from server.services.queues import metrics as queue_metrics
from server.storage import tables as t
from server.storage.store import Store
from shipyard import clock


@pytest.fixture()
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'metrics.db'}")
    yield opened
    queue_metrics.stop_sampling_later(opened)
    opened.close()


def _samples(store: Store, queue: str) -> list[int]:
    with store.tx() as conn:
        return [r.length for r in conn.execute(t.queue_metrics.select().where(t.queue_metrics.c.queue == queue)
                                                .order_by(t.queue_metrics.c.seq))]


@pytest.mark.parametrize("age_s, kept", [(0.0, True), (queue_metrics.SETTLE_S - 0.1, True),
                                         (queue_metrics.SETTLE_S, False), (60.0, False)])
def test_a_taken_queue_stays_marked_only_while_its_change_may_still_be_committing(monkeypatch, age_s, kept):
    later = queue_metrics.Later()
    monkeypatch.setattr(clock, "monotonic", lambda: 1000.0)
    later.mark("q1")
    monkeypatch.setattr(clock, "monotonic", lambda: 1000.0 + age_s)
    assert later.take(["q1", "q2"]) == ["q1"]
    assert later.take() == (["q1"] if kept else [])


def test_changes_mark_their_queue_and_the_pass_samples_it(store):
    queue_metrics.sample_later(store)
    with store.tx() as conn:
        for i in range(3):
            crud.add_entry(conn, "q1", f"task-{i}")
    with store.tx() as conn:
        crud.pop(conn, "q1")
    assert _samples(store, "q1") == []  # no sample inside the changes' transactions
    assert queue_metrics.run_pass(store) == 1
    assert _samples(store, "q1") == [2]
    queue_metrics.stop_sampling_later(store)  # back to sampling in each transaction
    with store.tx() as conn:
        crud.pop(conn, "q1")
    assert _samples(store, "q1")[-1] == 1


def test_a_read_samples_what_this_process_changed_first(store):
    queue_metrics.sample_later(store)
    with store.tx() as conn:
        crud.add_entry(conn, "q1", "task-0")
    now = time.time()
    with store.tx() as conn:
        [series] = queue_metrics.metrics(conn, {"queue_ids": ["q1"], "from_date": now - 60, "to_date": now + 1,
                                                "interval": 1}, ["q1"])
    assert series["queue_lengths"][-1] == 1


def test_a_running_server_samples_a_change_without_a_read(server):
    api = server.api()
    queue = api.call("queues.create", {"name": f"sampled-{time.time()}"})["id"]
    task = api.call("tasks.create", {"name": "sampled", "type": "training"})["id"]
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    database = server.data_dir / "shipyard.db"
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT length FROM queue_metrics WHERE queue = ?", (queue,)).fetchall()
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rows and rows[-1][0] == 1
