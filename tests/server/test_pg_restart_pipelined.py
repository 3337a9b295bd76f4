"""PostgreSQL restarted in the middle of a pipelined transaction (events.add_batch on PostgreSQL,
server/storage/store.py `tx(pipelined=True)`): the batch's statements are sent, the COMMIT is
not, and the server goes down. The call gets the retryable 503 ("nothing was changed, retry"),
nothing of the batch is stored, and the same store (a replica's) reconnects by itself: the
batch sent again is stored once.

In-process (the handler on a store of its own), so the restart lands at one exact point: just
before the pipeline's COMMIT goes out. The HTTP-level restart test, with requests arriving
throughout the restart, is tests/server/test_replicas.py's.
"""
from __future__ import annotations

from typing import Any

import psycopg
import pytest

from server import errors
from server.app import create_state
from server.auth.keys import Identity
from server.config import ServerConfig
from server.rpc import api
from server.rpc.registry import CallContext, Request, lookup
from server.storage import store as store_module
from tests import pg
from tests.helpers import ACCESS_KEY

pytestmark = pytest.mark.skipif(not pg.available(), reason="PostgreSQL binaries not installed (.ci/run installs them)")


class _HaltBeforeCommit:
    """Stands in for the pipeline's COMMIT statement: the first time, PostgreSQL is stopped
    (sessions ended, open transactions rolled back) before the COMMIT is sent."""

    def __init__(self, real: Any, server: pg.PgServer):
        self.real, self.server, self.halted = real, server, False

    def run(self, raw: Any, dialect: Any, params: Any) -> Any:
        if not self.halted:
            self.halted = True
            self.server.halt()
        return self.real.run(raw, dialect, params)


def _batch(task: str) -> list[dict]:
    scalars = [{"task": task, "type": "training_stats_scalar", "metric": "loss", "variant": f"v{k}",
                "value": float(k), "iter": 7, "timestamp": 1_700_000_000_000} for k in range(5)]
    logs = [{"task": task, "type": "log", "msg": f"line {k}", "level": "info", "timestamp": 1_700_000_000_000}
            for k in range(5)]
    return scalars + logs


def _stored(url: str, task: str) -> tuple[int, int, dict]:
    """(events, task_metrics rows, last_metrics) of `task`, read outside the server."""
    with psycopg.connect(url) as conn:
        events = conn.execute("SELECT count(*) FROM events WHERE task = %s", (task,)).fetchone()[0]
        metrics = conn.execute("SELECT count(*) FROM task_metrics WHERE task = %s", (task,)).fetchone()[0]
        doc = conn.execute("SELECT doc FROM tasks WHERE id = %s", (task,)).fetchone()[0]
    return events, metrics, doc.get("last_metrics") or {}


def test_restart_mid_pipeline_is_retryable_and_leaves_nothing(tmp_path, monkeypatch):
    server = pg.PgServer()
    state = None
    try:
        url = server.new_database("restart_pipelined")
        state = create_state(ServerConfig(data_dir=tmp_path, db=url))

        def ctx(endpoint: str) -> CallContext:
            return CallContext(store=state.store, identity=Identity(user=ACCESS_KEY, user_name="test"),
                               endpoint=endpoint, version="2.31", settings=state)

        task = lookup("tasks.create")(ctx("tasks.create"), Request({"name": "restarted", "type": "training"}))["id"]
        add_batch = lookup("events.add_batch")
        halting = _HaltBeforeCommit(store_module._COMMIT, server)
        monkeypatch.setattr(store_module, "_COMMIT", halting)

        with pytest.raises(Exception) as failed:
            add_batch(ctx("events.add_batch"), Request({"__lines__": _batch(task)}))
        assert halting.halted
        code, body = api._failure("events.add_batch", "2.31", failed.value)
        assert code == 503 and b"retry the call" in body, (failed.value, body)

        server.start()
        assert _stored(url, task) == (0, 0, {})  # nothing half-written: the open transaction rolled back
        # The same store reconnects by itself (its pooled connections died with the server).
        answer = add_batch(ctx("events.add_batch"), Request({"__lines__": _batch(task)}))
        assert answer["added"] == 10 and answer["errors"] == 0
        # stored once, as the same batch on a task that never met a restart
        other = lookup("tasks.create")(ctx("tasks.create"), Request({"name": "calm", "type": "training"}))["id"]
        add_batch(ctx("events.add_batch"), Request({"__lines__": _batch(other)}))
        events, metrics, last = _stored(url, task)
        assert (events, metrics, len(last)) == _stored(url, other)[:2] + (len(_stored(url, other)[2]),)
        assert events > 0 and metrics == 5
        # tasks.get_by_id reads in a pipelined transaction too: an unknown id ends it cleanly
        get_by_id = lookup("tasks.get_by_id")
        for _ in range(3):
            with pytest.raises(errors.APIError):
                get_by_id(ctx("tasks.get_by_id"), Request({"task": "no-such-task"}))
            assert get_by_id(ctx("tasks.get_by_id"), Request({"task": task}))["task"]["id"] == task
    finally:
        if state is not None:
            state.store.close()
        server.stop()
