"""task_metrics, the indexed side table of each task's last metric values (the experiment table's
sort by a metric column reads it): it follows event ingest, task reset and delete, a project
deleted with its contents, and is filled for a data dir from before it."""
from __future__ import annotations

import sqlite3
import uuid

from server.services.events.store import metric_hash
from server.storage import tables as t
from server.storage.store import Store, sqlite_url
from tests.server.test_tasks_query import ids, make_task

KEY = f"{metric_hash('loss')}.{metric_hash('total')}"


def _rows(server, task: str) -> list[tuple]:
    with sqlite3.connect(sqlite_url(server.data_dir)[len("sqlite:///"):]) as db:
        return db.execute("SELECT metric, value, min_value, max_value FROM task_metrics WHERE task = ?",
                          (task,)).fetchall()


def _report(api, task: str, *values: float) -> None:
    api.events([{"type": "training_stats_scalar", "task": task, "metric": "loss", "variant": "total",
                 "value": v, "iter": i, "timestamp": i + 1} for i, v in enumerate(values)])


def _project(api) -> str:
    return api.call("projects.create", {"name": f"tm-{uuid.uuid4().hex[:8]}"})["id"]


def test_task_metrics_follow_ingest_reset_and_delete(server, api):
    task = make_task(api, "m", project=_project(api))
    _report(api, task, 0.5, 2.0)
    _report(api, task, 1.0)
    assert _rows(server, task) == [(KEY, 1.0, 0.5, 2.0)]
    api.call("tasks.reset", {"task": task, "force": True})
    assert _rows(server, task) == []
    _report(api, task, 3.0)
    assert _rows(server, task) == [(KEY, 3.0, 3.0, 3.0)]
    api.call("tasks.delete", {"task": task, "force": True})
    assert _rows(server, task) == []


def test_task_metrics_leave_with_a_deleted_project(server, api):
    project = _project(api)
    task = make_task(api, "m", project=project)
    _report(api, task, 0.5)
    api.call("projects.delete", {"project": project, "delete_contents": True, "force": True})
    assert _rows(server, task) == []


def test_a_page_spans_valued_and_missing_tasks_in_order(api):
    """The sorted page comes from two queries (tasks with the value by the index, then those
    without by id): a page across the seam has both, filters applied in each."""
    project = _project(api)
    valued = [make_task(api, f"v{i}", project=project) for i in range(3)]
    missing = sorted(make_task(api, f"n{i}", project=project) for i in range(2))
    hidden = make_task(api, "h", project=project, system_tags=["archived"])
    for task, value in zip([*valued, hidden], (3.0, 1.0, 2.0, 9.0), strict=True):
        _report(api, task, value)
    key = f"last_metrics.{KEY}.value"
    body = {"order_by": [f"-{key}"], "system_tags": ["-archived"]}
    assert ids(api, project, **body) == [valued[0], valued[2], valued[1], *missing]
    assert ids(api, project, **body, page=1, page_size=2) == [valued[1], missing[0]]
    assert ids(api, project, order_by=[f"{key}"], page=1, page_size=2) == [valued[0], hidden]


def test_an_old_data_dir_gets_its_task_metrics_at_start(tmp_path):
    url = sqlite_url(tmp_path)
    store = Store(url)
    metrics = {"m": {"v": {"value": 2, "min_value": 1.5, "max_value": 4.0}, "w": {"value": "text"}}}
    with store.tx() as conn:
        store.insert(conn, t.tasks, {"id": "a", "name": "a", "last_metrics": metrics})
        store.insert(conn, t.tasks, {"id": "b", "name": "b"})
    store.close()
    with sqlite3.connect(url[len("sqlite:///"):]) as db:  # as a release before the table (and Alembic) left it
        db.execute("DROP TABLE task_metrics")
        db.execute("DROP TABLE alembic_version")
        for later in ("fair_quotas", "fair_usage"):   # tables of later revisions (0002 ...) it never had
            db.execute(f"DROP TABLE {later}")
        db.execute("DROP INDEX ix_queue_entries_queue_added")   # and revision 0003's index
    store = Store(url, upgrade=True)
    with store.tx() as conn:
        got = sorted(tuple(r) for r in conn.execute(t.task_metrics.select()))
    store.close()
    assert got == [("a", "m.v", 2.0, 1.5, 4.0), ("a", "m.w", None, None, None)]
