"""The `events` table's row format, shared by ingest (events_ingest) and the readers
(events_read, events_metrics).

* A non-log event is one row: the cleaned event in `doc` (what readers return), and the
  fields queries filter, sort or aggregate on copied into columns (task, type, iter, metric,
  variant, timestamp, value). Its `event_key` is md5(task, type, iter, metric, variant, key),
  so reporting the same point again replaces the earlier row.
* Log lines are always appended, as chunks: one row per task per request (at most LOG_CHUNK
  lines), `doc` holding the lines column-wise and sorted by timestamp, `timestamp` ..
  `timestamp_max` their time span and `n_events` their number. Readers expand chunks and order
  lines by (timestamp, seq, index); paging by timestamp works across overlapping chunks.
"""
from __future__ import annotations

import hashlib
import math
from operator import itemgetter
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, select, text

from server.storage import tables as t

LOG = "log"
SCALAR = "training_stats_scalar"
VECTOR = "training_stats_vector"
IMAGE = "training_debug_image"
PLOT = "plot"
EVENT_TYPES = frozenset({SCALAR, VECTOR, IMAGE, PLOT, LOG})
SINGLE_VALUE_ITER = -2 ** 31  # report_single_value(): metric "Summary" at this iteration
LOG_CHUNK = 1000  # log lines per stored row
IN_CHUNK = 500  # ids per IN (...) clause; far below every backend's bound-parameter limit
# A log line with only these fields is stored column-wise with nothing extra.
LOG_KEYS = frozenset({"timestamp", "type", "task", "level", "worker", "msg", "method", "allow_locked",
                      "model_event"})
IS_LOG = text("events.type = 'log'")
_md5 = hashlib.md5
_first = itemgetter(0)


def json_safe(value: Any) -> Any:
    """`value` with every NaN/inf float replaced by None: JSON has no such numbers (PostgreSQL's
    json type and browsers refuse them), so a non-finite report is kept as a null point."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {key: json_safe(item) for key, item in value.items()}
    if kind is list:
        return [json_safe(item) for item in value]
    return value


def metric_hash(name: str) -> str:
    """The key ClearML uses for a metric or variant name inside `last_metrics`."""
    return _md5(name.encode("utf-8")).hexdigest()


def chunks(items: list, size: int = IN_CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


SERVER_WORKER = "shipyard-server"
"""The `worker` of console lines the server writes itself."""


def add_server_line(conn: Any, task: str, msg: str, timestamp_ms: int, level: str = "error") -> None:
    """One console line from the server, for an ending it decided itself (the task's agent was lost):
    the task's last line says why, as the agent's own last line does when it reports."""
    conn.execute(insert(t.events), log_rows(task, [(timestamp_ms, level, SERVER_WORKER, msg, None)]))


def log_rows(task: str, lines: list[tuple]) -> list[dict]:
    """One task's log lines as chunk rows of LOG_CHUNK lines, sorted by timestamp (stably).

    A chunk's `doc` is column-wise - {timestamp: [...], level: [...], worker: [...], msg: [...]}
    plus `extra` {index: {field: value}} for lines that carried other fields - which encodes
    about three times faster than a list of objects; `expand_chunk` turns it back."""
    lines.sort(key=_first)
    rows = []
    for start in range(0, len(lines), LOG_CHUNK):
        piece = lines[start:start + LOG_CHUNK]
        stamps, levels, workers, msgs, extras = (list(col) for col in zip(*piece, strict=True))
        doc: dict[str, Any] = {"timestamp": stamps, "level": levels, "worker": workers, "msg": msgs}
        if any(extras):
            doc["extra"] = {str(i): extra for i, extra in enumerate(extras) if extra}
        rows.append({"task": task, "type": LOG, "iter": None, "metric": None, "variant": None,
                     "timestamp": stamps[0], "timestamp_max": stamps[-1], "n_events": len(piece),
                     "value": None, "event_key": None, "doc": doc})
    return rows


def expand_chunk(task: str, doc: dict) -> list[dict]:
    """The log events of one stored chunk, in its (timestamp) order."""
    events = [{"timestamp": ts, "type": LOG, "task": task, "level": level, "worker": worker, "msg": msg}
              for ts, level, worker, msg in zip(doc["timestamp"], doc["level"], doc["worker"], doc["msg"], strict=False)]
    for index, extra in (doc.get("extra") or {}).items():
        events[int(index)].update(extra)
    return events


def log_total(conn, task_id: str) -> int:
    c = t.events.c
    query = select(func.coalesce(func.sum(c.n_events), 0)).where(c.task == task_id, IS_LOG)
    return int(conn.execute(query).scalar_one())


def delete_task_events(conn, task_id: str) -> int:
    """Delete every event of a task (or model) in `conn`'s transaction; returns how many events
    went (log rows hold many lines, so a DELETE's rowcount undercounts)."""
    c = t.events.c
    count = conn.execute(select(func.coalesce(func.sum(c.n_events), 0)).where(c.task == task_id)).scalar_one()
    conn.execute(delete(t.events).where(c.task == task_id))
    return int(count)
