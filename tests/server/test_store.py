"""Storage layer details: forward schema upgrade of an older data dir, task_metrics following
saves, and which database errors rerun a call."""
from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import DBAPIError

from server.storage.store import Store, WriteConflict, conflicted, retrying, sqlite_url


def test_missing_nullable_columns_are_added(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the tasks table as the first release created it
        db.execute("CREATE TABLE tasks (id VARCHAR(32) PRIMARY KEY, name TEXT NOT NULL, project VARCHAR(32), "
                   "status VARCHAR(32) NOT NULL, type VARCHAR(32) NOT NULL, parent VARCHAR(32), created FLOAT NOT NULL, "
                   "last_update FLOAT NOT NULL, last_change FLOAT NOT NULL, doc JSON NOT NULL)")
        db.execute("INSERT INTO tasks VALUES ('a', 'n', NULL, 'created', 'training', NULL, 0, 0, 0, '{\"id\": \"a\"}')")
    store = Store(f"sqlite:///{path}", upgrade=True)
    columns = {c["name"] for c in inspect(store.engine).get_columns("tasks")}
    assert "lease_expires" in columns
    with store.tx() as conn:
        assert store.get(conn, __import__("server.storage.tables", fromlist=["tasks"]).tasks, "a") == {"id": "a"}
    store.close()


def _metric_rows(store: Store, task_id: str) -> list[tuple]:
    from server.storage import tables as t

    with store.tx() as conn:
        return sorted(tuple(r) for r in conn.execute(
            select(t.task_metrics.c.metric, t.task_metrics.c.value).where(t.task_metrics.c.task == task_id)))


def test_task_metrics_follow_saves_in_one_transaction(tmp_path):
    """A save that leaves last_metrics as read writes no task_metrics statement; one that changes
    them (in place, too) rewrites the rows; a task deleted and inserted again in the same
    transaction gets rows from its new document."""
    from server.storage import tables as t

    store = Store(sqlite_url(tmp_path))
    doc = {"id": "t1", "name": "t", "last_metrics": {"m": {"v": {"value": 1.0}}}}
    with store.tx() as conn:
        store.insert(conn, t.tasks, doc)
    with store.tx() as conn:
        loaded = store.get(conn, t.tasks, "t1")
        loaded["status"] = "queued"
        store.save(conn, t.tasks, loaded)  # unchanged metrics
        loaded["last_metrics"]["m"]["v"]["value"] = 2.0  # changed in place after the first save
        store.save(conn, t.tasks, loaded)
    assert _metric_rows(store, "t1") == [("m.v", 2.0)]
    with store.tx() as conn:
        loaded = store.get(conn, t.tasks, "t1")
        store.delete(conn, t.tasks, "t1")
        store.insert(conn, t.tasks, {"id": "t1", "name": "t", "last_metrics": {}})
        store.save(conn, t.tasks, loaded)  # the old document again: its rows come back
    assert _metric_rows(store, "t1") == [("m.v", 2.0)]
    store.close()


def test_a_deadlock_victim_runs_again():
    """PostgreSQL's deadlock (40P01) and serialization failure (40001) roll the transaction back
    whole: `retrying` runs the call again; any other database error is raised at once."""
    class Orig(Exception):
        def __init__(self, sqlstate: str):
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    calls = []

    def flaky(state: str) -> str:
        calls.append(state)
        if len(calls) < 3:
            raise DBAPIError("UPDATE ...", {}, Orig(state))
        return "done"

    assert retrying(flaky, "40P01") == "done" and len(calls) == 3
    calls.clear()
    assert retrying(flaky, "40001") == "done"
    calls.clear()
    with pytest.raises(DBAPIError):
        retrying(flaky, "23505")  # a unique violation is the caller's error, not a conflict
    assert len(calls) == 1
    assert conflicted(WriteConflict("x")) and not conflicted(ValueError("x"))


def _task_doc(**fields) -> dict:
    return {"id": "a", "name": "n", "type": "training", "status": "created", "project": "p1",
            "created": "2026-01-01T00:00:00+00:00", "last_update": "2026-01-01T00:00:00+00:00",
            "last_change": "2026-01-01T00:00:00+00:00", **fields}


def _project_column(store: Store) -> str:
    from server.storage import tables as t

    with store.tx() as conn:
        return conn.execute(select(t.tasks.c.project).where(t.tasks.c.id == "a")).scalar()


def test_a_save_writes_only_the_columns_that_changed_since_read(tmp_path):
    """SQLite: the UPDATE leaves out the derived columns that did not change (their index entries
    stay unwritten); a task deleted and inserted again in the transaction is written whole."""
    from server.storage import tables as t

    store = Store(sqlite_url(tmp_path))
    with store.tx() as conn:
        store.insert(conn, t.tasks, _task_doc())
    statements: list[str] = []
    with store.tx() as conn:
        conn.raw.set_trace_callback(statements.append)
        doc = store.get(conn, t.tasks, "a")
        assert store.save(conn, t.tasks, {**doc, "status": "queued", "last_update": "2026-01-02T00:00:00+00:00"},
                          expect_status="created")
        assert not store.save(conn, t.tasks, {**doc, "project": "p9"}, expect_status="created")  # not written
        assert store.save(conn, t.tasks, {**doc, "status": "queued", "last_update": "2026-01-02T00:00:00+00:00"})
        conn.raw.set_trace_callback(None)
    updates = [s for s in statements if s.startswith("UPDATE tasks")]
    assert "status=" in updates[0] and "last_update=" in updates[0] and "project=" not in updates[0]
    assert "project=" in updates[1]  # the refused save: compared with the row as stored, not as asked
    assert "status=" not in updates[2] and "last_update=" not in updates[2]  # as the first save left them
    assert _project_column(store) == "p1"
    with store.tx() as conn:
        doc = store.get(conn, t.tasks, "a")
        store.delete(conn, t.tasks, "a")
        store.insert(conn, t.tasks, {**doc, "project": "p2"})
        store.save(conn, t.tasks, {**doc, "project": "p1"})  # differs from the new row, not from the first read
    assert _project_column(store) == "p1"
    store.close()
