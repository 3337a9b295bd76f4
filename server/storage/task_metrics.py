"""A task's task_metrics rows (tables.task_metrics), derived from its document's last_metrics on
every write of the task, like the derived columns (store.columns_for).

    metric_rows(doc)                    the rows of a task document (what Store writes)
    _changed_rows(before, after)        the rows a save must upsert, or None: rewrite them all
    _CLEAR_METRICS, _INSERT_METRIC,     the statements Store's task_metrics methods run
    _UPSERT_METRIC
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, delete

from server.storage import tables as t
from server.storage.prepared import Prepared, insert_rows

_METRIC_FIELDS = ("value", "min_value", "max_value")
_CLEAR_METRICS = Prepared(delete(t.task_metrics).where(t.task_metrics.c.task == bindparam("p_task")))

_INSERT_METRIC = insert_rows(t.task_metrics)
# a task_metrics row inserted, or the one of the same (task, metric) updated
_UPSERT_METRIC = insert_rows(t.task_metrics, conflict=("task", "metric"), update=_METRIC_FIELDS)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN: no order
        return None
    return float(value)


def metric_rows(doc: dict) -> list[dict]:
    """A task's task_metrics rows, from its document's last_metrics."""
    out = []
    metrics = doc.get("last_metrics")
    for mkey, variants in (metrics.items() if isinstance(metrics, dict) else ()):
        for vkey, entry in (variants.items() if isinstance(variants, dict) else ()):
            if isinstance(entry, dict):
                out.append({"task": doc["id"], "metric": f"{mkey}.{vkey}",
                            **{f: _number(entry.get(f)) for f in _METRIC_FIELDS}})
    return out


def _changed_rows(before: list[dict], after: list[dict]) -> list[dict] | None:
    """The rows of `after` that are new or differ from `before`'s; None when one of `before`'s
    metrics is gone (the rows must then be rewritten whole)."""
    old = {row["metric"]: row for row in before}
    if not old.keys() <= {row["metric"] for row in after}:
        return None
    return [row for row in after if old.get(row["metric"]) != row]
