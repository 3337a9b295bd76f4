"""Ingest on PostgreSQL, where it runs as a pipelined transaction (server/storage/store.py
`tx(pipelined=True)`): the events tests and the lease fencing of agent batches again on a
PostgreSQL server, the task_metrics side table against the documents, and concurrent
re-reports of the same points (nothing lost, nothing stored twice)."""
from __future__ import annotations

import threading

import pytest

from tests import pg
from tests.helpers import Api, start_server
from tests.server.test_events import *  # noqa: F403  (the same tests, on the fixtures below)
from tests.server.test_events import make_task, scalar
from tests.server.test_leases import (  # noqa: F401  (collected here too)
    test_a_refused_log_batch_does_not_raise_the_mark_and_mixed_batches_are_fenced_too,
    test_claim_carries_attempt_and_fences_writes,
    test_resent_log_batches_are_stored_once,
)

pytestmark = pytest.mark.skipif(not pg.available(), reason="PostgreSQL binaries not installed (.ci/run installs them)")


@pytest.fixture(scope="module")
def database(pg_cluster):
    return pg_cluster, pg_cluster.new_database("shipyard_events")


@pytest.fixture(scope="module")
def server(database, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("pgevents"), db=database[1])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server):
    return server.api()


def _metric_rows(database, task: str) -> dict[str, tuple]:
    import psycopg

    with psycopg.connect(database[1]) as conn:
        rows = conn.execute("SELECT metric, value, min_value, max_value FROM task_metrics WHERE task = %s",
                            (task,)).fetchall()
    return {metric: tuple(values) for metric, *values in rows}


def test_task_metrics_rows_follow_the_document(api, database):
    task = make_task(api)
    api.events([scalar(task, 0, 3.0), scalar(task, 1, 1.0, variant="val")])
    api.events([scalar(task, 2, 5.0), scalar(task, 2, 0.5, metric="acc", variant="val")])
    doc = api.call("tasks.get_by_id", {"task": task})["task"]
    wanted = {f"{m}.{v}": (e["value"], e["min_value"], e["max_value"])
              for m, variants in doc["last_metrics"].items() for v, e in variants.items()}
    assert len(wanted) == 3 and _metric_rows(database, task) == wanted


def test_concurrent_rereports_keep_one_row_per_point(server, api):
    """Eight callers report the same points at once: each point is stored once (a unique-key
    clash is replayed), and every report is folded into last_metrics (a write conflict on the
    task document is replayed)."""
    task = make_task(api)
    failures: list[BaseException] = []
    # a key of each caller's own: a replica runs one call of a key at a time
    keys = [api.call("auth.create_credentials", {"label": f"reporter-{n}"}) for n in range(8)]

    def report(n: int) -> None:
        client = Api(server.api_url, keys[n]["access_key"], keys[n]["secret_key"])
        try:
            for rnd in range(5):
                client.events([scalar(task, it, float(n * 10 + rnd)) for it in range(4)]
                              + [{"type": "log", "task": task, "msg": f"{n}-{rnd}"}])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=report, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    points = api.call("events.get_task_events", {"task": task, "event_type": "training_stats_scalar",
                                                 "batch_size": 1000})
    assert sorted(e["iter"] for e in points["events"]) == [0, 1, 2, 3]
    assert api.call("events.get_task_log", {"task": task, "batch_size": 1000})["total"] == 40
    entry = next(iter(next(iter(api.call("tasks.get_by_id", {"task": task})["task"]["last_metrics"].values())).values()))
    assert entry["count"] == 8 * 5 * 4


def test_a_pipelined_transaction_is_one_transaction(database):
    """Store.tx(pipelined=True): a block that raises writes nothing, a write's error comes out as
    SQLAlchemy's at the commit, and the connection goes back to the pool in transaction mode."""
    from sqlalchemy import bindparam, exc, insert, select

    from server.storage import tables as t
    from server.storage.prepared import Prepared
    from server.storage.store import Store

    put = Prepared(insert(t.server_meta).values(key=bindparam("k"), value=bindparam("v")))
    store = Store(database[1])
    try:
        with pytest.raises(RuntimeError), store.tx(pipelined=True) as conn:
            conn.execute(put, {"k": "pipelined-a", "v": "1"})
            raise RuntimeError("refused")
        with pytest.raises(exc.IntegrityError), store.tx(pipelined=True) as conn:
            conn.execute_many(put, [{"k": "pipelined-b", "v": "1"}, {"k": "pipelined-b", "v": "2"}])
        with store.tx(pipelined=True) as conn:
            conn.execute(put, {"k": "pipelined-c", "v": "1"})
            with pytest.raises(RuntimeError):
                conn.execute(select(t.server_meta.c.key))  # SQLAlchemy's statements are not for a pipeline
        with store.tx() as conn:
            assert conn.raw.autocommit is False
            keys = {row[0] for row in conn.execute(select(t.server_meta.c.key))}
        assert {"pipelined-a", "pipelined-b"}.isdisjoint(keys) and "pipelined-c" in keys
    finally:
        store.close()
