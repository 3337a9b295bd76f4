"""Group commit on SQLite (server/storage/group.py): calls of one loop pass share a COMMIT, each
is still all-or-nothing, nobody is answered before the COMMIT, and a failed group fails all."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from server.storage import group
from server.storage import tables as t
from server.storage.store import Store, sqlite_url
from tests.helpers import run_async


def _queue(queue_id: str) -> dict:
    return {"id": queue_id, "name": queue_id, "created": "2026-01-01T00:00:00+00:00"}


def _stored(tmp_path) -> set[str]:
    """The queue ids another connection sees (what is committed)."""
    with sqlite3.connect(tmp_path / "shipyard.db") as db:
        return {row[0] for row in db.execute("SELECT id FROM queues")}


def _run(store: Store, *calls):
    """Run each coroutine function as its own task (as the API listener does) on one loop."""
    async def main():
        store.group_commits(asyncio.get_running_loop())
        try:
            return await asyncio.gather(*(asyncio.create_task(c()) for c in calls), return_exceptions=True)
        finally:
            store.stop_grouping()
    return run_async(main)


def _call(store: Store, tmp_path, queue_id: str, fail: bool = False, seen: list | None = None):
    async def call():
        group.grouped()
        with store.tx() as conn:
            store.insert(conn, t.queues, _queue(queue_id))
            if fail:
                raise ValueError("this call fails")
        if seen is not None:
            seen.append(set(_stored(tmp_path)))  # before the shared COMMIT
        await group.committed()
        return queue_id
    return call


@pytest.fixture
def store(tmp_path):
    store = Store(sqlite_url(tmp_path))
    yield store
    store.close()


def test_calls_of_one_pass_share_a_commit_and_answer_after_it(store, tmp_path):
    seen: list[set] = []
    before = _stored(tmp_path)
    results = _run(store, _call(store, tmp_path, "a", seen=seen), _call(store, tmp_path, "b", seen=seen))
    assert results == ["a", "b"]
    assert seen == [before, before]  # neither call's write was visible (committed) before it answered
    assert _stored(tmp_path) - before == {"a", "b"}


def test_a_failing_call_is_rolled_back_alone(store, tmp_path):
    before = _stored(tmp_path)
    results = _run(store, _call(store, tmp_path, "a"), _call(store, tmp_path, "b", fail=True),
                   _call(store, tmp_path, "c"))
    assert results[0] == "a" and isinstance(results[1], ValueError) and results[2] == "c"
    assert _stored(tmp_path) - before == {"a", "c"}


def test_a_failing_first_call_is_rolled_back_and_the_next_starts_a_group(store, tmp_path):
    """The group's first call has no savepoint of its own: its failure rolls back the whole
    (otherwise empty) transaction, and the calls after it form a new group."""
    before = _stored(tmp_path)
    results = _run(store, _call(store, tmp_path, "a", fail=True), _call(store, tmp_path, "b"),
                   _call(store, tmp_path, "c", fail=True), _call(store, tmp_path, "d"))
    assert isinstance(results[0], ValueError) and results[1] == "b"
    assert isinstance(results[2], ValueError) and results[3] == "d"
    assert _stored(tmp_path) - before == {"b", "d"}
    assert store.groups is None


def test_a_group_the_database_ended_fails_every_call(store, tmp_path):
    before = _stored(tmp_path)

    async def breaks():
        group.grouped()
        with store.tx() as conn:
            store.insert(conn, t.queues, _queue("x"))
            conn.raw.execute("ROLLBACK")  # as SQLite does on an I/O error or a full disk
            raise OSError("disk I/O error")

    results = _run(store, _call(store, tmp_path, "a"), breaks)
    assert isinstance(results[0], Exception) and isinstance(results[1], OSError)
    assert _stored(tmp_path) == before  # "a" was not answered as done, and is not stored
    assert _run(store, _call(store, tmp_path, "d")) == ["d"]  # the next pass starts afresh
    assert "d" in _stored(tmp_path)


def test_a_transaction_that_did_not_opt_in_commits_the_group_first(store, tmp_path):
    before = _stored(tmp_path)
    state: dict = {}

    async def both():
        token = group.grouped()
        with store.tx() as conn:
            store.insert(conn, t.queues, _queue("a"))
        group.ungrouped(token)
        with store.tx() as conn:  # in the same pass, like the lease reaper on the loop
            state["inside"] = _stored(tmp_path)
            store.insert(conn, t.queues, _queue("b"))

    assert _run(store, both) == [None]
    assert state["inside"] - before == {"a"}  # the group had committed before the lone transaction began
    assert _stored(tmp_path) - before == {"a", "b"}
    assert store.groups is None  # stop_grouping ran


def test_nested_transactions_are_refused_in_a_group(store, tmp_path):
    async def nested():
        group.grouped()
        with store.tx(), store.tx():
            pass

    [result] = _run(store, nested)
    assert isinstance(result, RuntimeError)


def test_a_queue_is_sampled_once_a_group_with_the_state_it_commits(store, tmp_path):
    from server.services.queues import crud

    statements: list[str] = []

    def call(task_id: str):
        async def run():
            group.grouped()
            with store.tx() as conn:
                if not statements:
                    conn.raw.set_trace_callback(statements.append)
                crud.add_entry(conn, "q1", task_id)
            await group.committed()
        return run

    _run(store, call("t1"), call("t2"), call("t3"))
    assert sum(s.startswith("UPDATE queue_metrics") for s in statements) == 1  # not one per call
    with sqlite3.connect(tmp_path / "shipyard.db") as db:
        assert db.execute("SELECT length FROM queue_metrics WHERE queue = 'q1' "
                          "ORDER BY timestamp DESC LIMIT 1").fetchone() == (3,)
