"""Prepared statements and `Store.tx` on SQLite and PostgreSQL: the same results, conversions,
errors and transaction behaviour as the SQLAlchemy path they replace on the hot paths."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from server.storage import tables as t
from server.storage.prepared import Prepared
from server.storage.store import Store

CREDS = t.credentials
_INSERT = Prepared(insert(CREDS).values(access_key=bindparam("k"), secret_hash=bindparam("h"), name="",
                                        role="admin", created=bindparam("c"), revoked=bindparam("r")))
_GET = Prepared(select(CREDS.c.access_key, CREDS.c.revoked, CREDS.c.created).where(CREDS.c.access_key == bindparam("k")))
_REVOKE = Prepared(update(CREDS).where(CREDS.c.access_key == bindparam("k")).values(revoked=True))
_DROP = Prepared(delete(CREDS).where(CREDS.c.access_key == bindparam("k")).returning(CREDS.c.access_key))


@pytest.fixture()
def store(database_url):
    store = Store(database_url)
    yield store
    store.close()


def test_rows_types_rowcount_and_returning(store):
    with store.tx() as conn:
        conn.execute(_INSERT, {"k": "a", "h": "x", "c": 1.5, "r": False})
        conn.execute(_INSERT, {"k": "b", "h": "y", "c": 2, "r": True})
    with store.tx() as conn:
        row = conn.execute(_GET, {"k": "b"}).first()
        assert row.access_key == "b" and row.revoked is True and row.created == 2.0
        assert conn.execute(_GET, {"k": "missing"}).first() is None
        assert conn.execute(_GET, {"k": "missing"}).scalar() is None
        assert conn.execute(_REVOKE, {"k": "a"}).rowcount == 1
        assert conn.execute(_REVOKE, {"k": "missing"}).rowcount == 0
        assert [r.access_key for r in conn.execute(_DROP, {"k": "b"})] == ["b"]
    with store.tx() as conn:
        assert conn.execute(_GET, {"k": "a"}).first().revoked is True
        assert conn.execute(_GET, {"k": "b"}).all() == []


def test_json_documents_round_trip(store):
    doc = {"id": "q" * 32, "name": "n", "created": "2026-01-01T00:00:00+00:00", "nested": {"a": [1, 2.5, None]}}
    with store.tx() as conn:
        store.insert(conn, t.queues, doc)
    with store.tx() as conn:
        loaded = store.get(conn, t.queues, doc["id"])
        assert loaded == doc
        loaded["nested"]["a"].append(3)  # a fresh object: editing it changes nothing stored
        assert store.get(conn, t.queues, doc["id"]) == doc


def test_driver_errors_are_sqlalchemy_errors_and_roll_back_the_whole_transaction(store):
    with store.tx() as conn:
        conn.execute(_INSERT, {"k": "a", "h": "x", "c": 1, "r": False})
    with pytest.raises(IntegrityError), store.tx() as conn:
        conn.execute(_INSERT, {"k": "b", "h": "x", "c": 1, "r": False})
        conn.execute(_INSERT, {"k": "a", "h": "dup", "c": 1, "r": False})
    with store.tx() as conn:
        assert conn.execute(_GET, {"k": "b"}).first() is None  # nothing half-written


def test_prepared_and_sqlalchemy_statements_share_one_transaction(store):
    with pytest.raises(RuntimeError), store.tx() as conn:
        conn.execute(_INSERT, {"k": "p", "h": "x", "c": 1, "r": False})
        conn.execute(insert(CREDS).values(access_key="s", secret_hash="x", created=1))
        assert {r.access_key for r in conn.execute(select(CREDS.c.access_key))} == {"p", "s"}
        raise RuntimeError("abandon")
    with store.tx() as conn:
        assert conn.execute(select(CREDS.c.access_key)).all() == []
        conn.execute(insert(CREDS).values(access_key="s", secret_hash="x", created=1))
        conn.execute(_INSERT, {"k": "p", "h": "x", "c": 1, "r": False})
    with store.tx() as conn:  # the connection is reusable after SQLAlchemy began inside a Tx
        assert sorted(r.access_key for r in conn.execute(select(CREDS.c.access_key))) == ["p", "s"]


def test_threads_each_get_their_own_transaction(store):
    def add(key: str) -> None:
        with store.tx() as conn:
            conn.execute(_INSERT, {"k": key, "h": "x", "c": 1, "r": False})

    threads = [threading.Thread(target=add, args=(f"k{i}",)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with store.tx() as conn:
        assert len(conn.execute(select(CREDS.c.access_key)).all()) == 8


def test_nested_transaction_in_one_thread_is_refused_on_sqlite(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with store.tx(), pytest.raises(RuntimeError, match="nested"), store.tx():
        pass
    store.close()


def test_expanding_parameters_are_refused():
    stmt = Prepared(select(CREDS.c.access_key).where(CREDS.c.access_key.in_(bindparam("keys", expanding=True))))
    with pytest.raises(ValueError, match="plain bound parameters"):
        stmt.compiled(sqlite.dialect())


def test_a_locked_database_is_reported_as_sqlalchemy_operational_error(tmp_path):
    """BEGIN IMMEDIATE on the held connection goes to the driver directly; when another process
    holds the write lock past the busy timeout, callers still see SQLAlchemy's error class."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    path = tmp_path / "db.sqlite"
    store = Store(f"sqlite:///{path}")
    store._thread_connection().connection.dbapi_connection.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="locked"), store.tx():
            pass
    finally:
        other.execute("ROLLBACK")
        other.close()
    with store.tx() as conn:  # the connection is usable once the lock is gone
        assert conn.execute(_GET, {"k": "a"}).first() is None
    store.close()
