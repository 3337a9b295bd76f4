"""`prepared.ArrayWrite` on SQLite and PostgreSQL: a write of many rows gives the rows that one
write a row would (order, NULLs, JSON documents, conflicts, errors), and ingest through it reads
back the same on both stores."""
from __future__ import annotations

import math

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError

from server.auth.keys import Identity
from server.rpc.registry import CallContext, Request
from server.services import load_all
from server.services.events import ingest, read
from server.services.tasks import crud as tasks
from server.storage import tables as t
from server.storage.prepared import insert_rows
from server.storage.store import Store

EVENTS = insert_rows(t.events)
METRICS = insert_rows(t.task_metrics, conflict=("task", "metric"), update=("value", "min_value", "max_value"))


@pytest.fixture()
def store(database_url):
    store = Store(database_url)
    yield store
    store.close()


def _event(n: int, **extra) -> dict:
    row = {"task": "t" * 32, "type": "log", "iter": None, "metric": None, "variant": None, "timestamp": n,
           "timestamp_max": n, "n_events": 1, "value": None, "event_key": None, "doc": {"n": n, "msg": f"line {n}"}}
    return {**row, **extra}


def _stored(store: Store) -> list:
    with store.tx() as conn:
        return conn.execute(select(t.events.c.seq, t.events.c.timestamp, t.events.c.value, t.events.c.iter,
                                   t.events.c.event_key, t.events.c.doc).order_by(t.events.c.seq)).all()


def test_rows_go_in_in_order_with_nulls_and_json_documents(store):
    rows = [_event(n) for n in range(50)]
    rows[3] = _event(3, value=0.1, iter=2 ** 62, event_key="k" * 32,
                     doc={"nested": [1, None, "é\u2603 \u0000 \"q\""], "x": 1e-300, "big": 2 ** 63 - 1})
    with store.tx(pipelined=True) as conn:
        conn.execute_many(EVENTS, rows)
        conn.execute_many(EVENTS, [])  # nothing to write: no statement
    stored = _stored(store)
    assert [r.timestamp for r in stored] == list(range(50))  # serial numbers follow the rows' order
    assert stored[3].value == 0.1 and stored[3].iter == 2 ** 62 and stored[3].event_key == "k" * 32
    assert stored[3].doc == {"nested": [1, None, "é\u2603 \u0000 \"q\""], "x": 1e-300, "big": 2 ** 63 - 1}
    assert stored[4].value is None and stored[4].iter is None and stored[4].doc == {"n": 4, "msg": "line 4"}


def test_upsert_inserts_new_keys_and_updates_existing_ones(store):
    task = "a" * 32
    with store.tx() as conn:
        conn.execute_many(METRICS, [{"task": task, "metric": "m.a", "value": 1.0, "min_value": 1.0, "max_value": 1.0}])
    with store.tx() as conn:
        conn.execute_many(METRICS, [
            {"task": task, "metric": "m.a", "value": 3.0, "min_value": 1.0, "max_value": 3.0},
            {"task": task, "metric": "m.b", "value": None, "min_value": None, "max_value": None},
        ])
    with store.tx() as conn:
        rows = conn.execute(select(t.task_metrics).order_by(t.task_metrics.c.metric)).all()
    assert [tuple(r) for r in rows] == [(task, "m.a", 3.0, 1.0, 3.0), (task, "m.b", None, None, None)]


def test_a_refused_row_refuses_the_whole_write(store):
    with store.tx() as conn:
        conn.execute_many(EVENTS, [_event(0, event_key="k" * 32)])
    with pytest.raises(IntegrityError), store.tx() as conn:
        conn.execute_many(EVENTS, [_event(1), _event(2, event_key="k" * 32)])
    assert [r.timestamp for r in _stored(store)] == [0]


def test_ingest_reads_back_the_same_on_both_stores(store):
    load_all()
    ctx = CallContext(store=store, identity=Identity(user="u", user_name="u"), endpoint="events.add_batch",
                      version="2.31")
    task = tasks.create(ctx, Request({"name": "ingest", "type": "training"}))["id"]

    def batch(it: int, values: list[float]) -> list[dict]:
        scalars = [{"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": f"v{k}",
                    "value": value, "iter": it, "timestamp": 1000 + it} for k, value in enumerate(values)]
        logs = [{"task": task, "type": "log", "level": "info", "msg": f"line {it}.{n}", "timestamp": 1000 + it}
                for n in range(3)]
        return scalars + logs

    assert ingest.add_batch(ctx, Request({"__lines__": batch(0, [1.0, 2.0])}))["added"] == 5
    assert ingest.add_batch(ctx, Request({"__lines__": batch(1, [0.5, math.nan])}))["added"] == 5
    # the same point again replaces the stored one
    assert ingest.add_batch(ctx, Request({"__lines__": batch(1, [0.25, 4.0])[:2]}))["added"] == 2
    doc = tasks.get_by_id(ctx, Request({"task": task}))["task"]
    loss = next(iter(doc["last_metrics"].values()))
    by_variant = {entry["variant"]: entry for entry in loss.values()}
    assert by_variant["v0"]["value"] == 0.25 and by_variant["v0"]["min_value"] == 0.25
    assert by_variant["v1"]["value"] == 4.0 and by_variant["v1"]["max_value"] == 4.0
    assert doc["last_iteration"] == 1
    log = read.get_task_log(ctx, Request({"task": task, "batch_size": 100}))
    assert [e["msg"] for e in log["events"]] == [f"line {it}.{n}" for it in (1, 0) for n in (2, 1, 0)]
    with store.tx() as conn:
        points = conn.execute(select(t.events.c.variant, t.events.c.iter, t.events.c.value)
                              .where(t.events.c.type == "training_stats_scalar")
                              .order_by(t.events.c.iter, t.events.c.variant)).all()
    assert [tuple(p) for p in points] == [("v0", 0, 1.0), ("v1", 0, 2.0), ("v0", 1, 0.25), ("v1", 1, 4.0)]


def test_postgresql_sends_the_rows_as_one_statement_unless_one_holds_a_nul(store):
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite always runs the driver's executemany")
    write = insert_rows(t.events)
    per_row = []

    class Recorder:
        def run_many(self, dbapi_conn, dialect, rows):
            per_row.append(len(rows))
            write_row_by_row.run_many(dbapi_conn, dialect, rows)

    write_row_by_row, write.by_row["postgresql"] = write.by_row["postgresql"], Recorder()
    with store.tx() as conn:
        conn.execute_many(write, [_event(n) for n in range(20)])
    assert per_row == []
    with store.tx() as conn:
        conn.execute_many(write, [_event(20), _event(21, doc={"msg": "a\x00b"})])
    assert per_row == [2]
    assert [r.doc.get("msg") for r in _stored(store)][-2:] == ["line 20", "a\x00b"]


def test_a_nul_in_a_text_column_is_the_drivers_error_on_either_path(store):
    """PostgreSQL's text holds no NUL: the row-by-row path (taken for such rows) raises the
    driver's error, as the one statement would; SQLite stores it."""
    row = {"task": "a" * 32, "metric": "m\x00", "value": 1.0, "min_value": 1.0, "max_value": 1.0}
    if store.engine.dialect.name == "sqlite":
        with store.tx() as conn:
            conn.execute_many(METRICS, [row])
        return
    with pytest.raises(DBAPIError), store.tx() as conn:
        conn.execute_many(METRICS, [row])


def test_a_rereported_point_replaces_the_row_with_a_new_seq_even_holding_a_nul(store):
    """events.add_batch's point writes (a delete and an insert on SQLite, one upsert on
    PostgreSQL, and its row-by-row form for rows holding a NUL): the point's old row is gone,
    the new one comes after every row stored before it."""
    load_all()
    ctx = CallContext(store=store, identity=Identity(user="u", user_name="u"), endpoint="events.add_batch",
                      version="2.31")
    task = tasks.create(ctx, Request({"name": "points", "type": "training"}))["id"]

    def point(value: float, note: str) -> dict:
        return {"task": task, "type": "training_stats_scalar", "metric": "m", "variant": "v", "iter": 3,
                "value": value, "timestamp": 1000, "note": note}

    def log(msg: str) -> dict:
        return {"task": task, "type": "log", "level": "info", "msg": msg, "timestamp": 1000}

    for value, note in ((1.0, "first"), (2.0, "with a \x00 inside"), (3.0, "third")):
        ingest.add_batch(ctx, Request({"__lines__": [point(value, note), log(note)]}))
        with store.tx() as conn:
            rows = conn.execute(select(t.events.c.seq, t.events.c.type, t.events.c.value, t.events.c.doc)
                                .order_by(t.events.c.seq)).all()
        points = [r for r in rows if r.type == "training_stats_scalar"]
        assert [(p.value, p.doc["note"]) for p in points] == [(value, note)]
        earlier_logs = [r.seq for r in rows if r.type == "log" and r.doc["msg"] != [note]]
        assert points[0].seq > max(earlier_logs, default=0)
