"""Storage layer details: forward schema upgrade of an older data dir."""
from __future__ import annotations

import sqlite3

from sqlalchemy import inspect

from server.storage.store import Store


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
