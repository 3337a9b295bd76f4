"""The official UI's experiment table as a load: a `tasks.get_all_ex` page of 50 with 10 metric
columns, sorted by one of the metrics, over N tasks in one project (issue 19's performance
item). Used by bench_server.py (`--tasks-table N`).

The tasks are written straight into the server's database (the API would take minutes to
create 100k tasks and their metrics); the server is running while they are written, as it
would be while agents report.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from server.services.events.store import metric_hash
from server.storage import tables as t
from server.storage.store import Store, new_id, sqlite_url
from shipyard import clock

METRICS = [f"metric_{i}" for i in range(10)]
STATUSES = ("created", "queued", "in_progress", "completed", "failed", "stopped")


def _task(project: str, user: str, index: int, rng: random.Random) -> dict:
    now = clock.iso()
    metrics = {metric_hash(m): {metric_hash("total"): {"metric": m, "variant": "total", "value": rng.random(),
                                                       "min_value": 0.0, "max_value": 1.0, "count": 10}}
               for m in METRICS if rng.random() > 0.05}  # a few tasks lack a metric: they sort last
    return {"id": new_id(), "name": f"exp-{index}", "type": "training", "status": rng.choice(STATUSES),
            "project": project, "user": user, "company": "shipyard", "created": now, "last_update": now,
            "last_change": now, "status_changed": now, "tags": [f"tag-{index % 7}"], "system_tags": [],
            "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": str(rng.random())}}},
            "execution": {}, "models": {"input": [], "output": []}, "last_metrics": metrics,
            "last_iteration": 10, "script": {}, "runtime": {}}


def seed(data_dir: Path, db: str | None, project: str, user: str, count: int) -> None:
    store = Store(db or sqlite_url(data_dir))
    rng = random.Random(19)
    try:
        for start in range(0, count, 5000):
            with store.tx() as conn:
                for index in range(start, min(count, start + 5000)):
                    store.insert(conn, t.tasks, _task(project, user, index, rng))
        if not store.is_sqlite:  # the planner's statistics, as autovacuum keeps them on a live server
            with store.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
    finally:
        store.close()


def page_body(project: str) -> dict:
    """What the UI's table asks for: its columns (10 metrics among them), sorted by a metric."""
    columns = [f"last_metrics.{metric_hash(m)}.{metric_hash('total')}" for m in METRICS]
    return {"project": [project], "size": 50, "scroll_id": None, "search_hidden": False,
            "order_by": [f"-{columns[0]}.value"], "system_tags": ["-archived"], "type": ["__$not", "annotation"],
            "only_fields": ["name", "status", "type", "tags", "user.name", "project.name", "last_update", "started",
                            "execution.queue.name", "last_iteration", *columns]}


def measure(api, project: str, samples: int) -> list[float]:
    """Seconds per call, first page of the scroll each time (as the table's first paint)."""
    body = page_body(project)
    api.call("tasks.get_all_ex", body)  # warm
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        page = api.call("tasks.get_all_ex", body)
        times.append(time.perf_counter() - started)
        assert len(page["tasks"]) == 50, len(page["tasks"])
    return times
