"""events.*: metric/log ingest (`add_batch`, `add`) and the read-back endpoints.

Storage (the `events` table):
* A non-log event is one row: the cleaned event in `doc` (what readers return), and the
  fields queries filter, sort or aggregate on copied into columns (task, type, iter, metric,
  variant, timestamp, value). Its `event_key` is md5(task, type, iter, metric, variant, key),
  so reporting the same point again replaces the earlier row.
* Log lines are always appended, as chunks: one row per task per request (at most LOG_CHUNK
  lines), `doc` holding the lines column-wise and sorted by timestamp, `timestamp` ..
  `timestamp_max` their time span and `n_events` their number. Readers expand chunks and order
  lines by (timestamp, seq, index); paging by timestamp works across overlapping chunks.

Ingest is the hot path (a training run sends thousands of log lines a second): one pass over
the events in plain Python, one executemany per kind of row, and at most one document update
per task per request, all in one transaction - a refused request writes nothing.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import defaultdict
from operator import itemgetter
from typing import Any, Iterable

from sqlalchemy import and_, delete, func, insert, or_, select, text
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from server import errors
from server.registry import CallContext, Request, endpoint
from server.storage import tables as t
from shipyard import clock

LOG = "log"
SCALAR = "training_stats_scalar"
VECTOR = "training_stats_vector"
IMAGE = "training_debug_image"
PLOT = "plot"
EVENT_TYPES = frozenset({SCALAR, VECTOR, IMAGE, PLOT, LOG})
LOG_LEVELS = frozenset({"notset", "debug", "verbose", "info", "warn", "warning", "error", "fatal", "critical"})
SINGLE_VALUE_ITER = -2 ** 31  # report_single_value(): metric "Summary" at this iteration
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
MAX_BATCH_EVENTS = 100_000
LOG_CHUNK = 1000  # log lines per stored row
LAST_UPDATE_GRANULARITY_S = 1.0  # log-only batches refresh a task's last_update at most this often
_IN_CHUNK = 500  # ids per IN (...) clause; far below every backend's bound-parameter limit
_md5 = hashlib.md5
_first = itemgetter(0)
# Request-format fields every client sends that are not part of an event.
_JUNK_KEYS = ("method", "allow_locked")
# A log line with only these fields is stored column-wise with nothing extra.
_LOG_KEYS = frozenset({"timestamp", "type", "task", "level", "worker", "msg", "method", "allow_locked",
                       "model_event"})


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


def _chunks(items: list, size: int = _IN_CHUNK) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# -- ingest ------------------------------------------------------------------------------------


def _incoming_events(req: Request) -> list:
    body = req.body
    events = body.get("__lines__")
    if events is None:
        if isinstance(body.get("events"), list):
            events = body["events"]
        elif "type" in body or "task" in body:
            events = [{k: v for k, v in body.items() if k != "__lines__"}]
        else:
            raise errors.validation("no events in the request body (send JSON lines, a JSON list of "
                                    "events, or a single event object)")
    # Offline-session files hold one JSON *list* of events per line: accept those too.
    if list in map(type, events):
        flat: list = []
        for item in events:
            flat.extend(item if type(item) is list else [item])
        events = flat
    return events


class _Batch:
    """The outcome of validating one request's events (nothing written yet)."""

    def __init__(self) -> None:
        self.logs: dict[str, list[tuple]] = {}  # task -> (timestamp, level, worker, msg, extra)
        self.keyed: dict[str, dict] = {}  # event_key -> row; a repeated point keeps the last one
        self.errors: dict[str, int] = defaultdict(int)
        self.models: set[str] = set()  # ids whose events are model events

    def error(self, msg: str, count: int = 1) -> None:
        self.errors[msg] += count

    def __bool__(self) -> bool:
        return bool(self.logs or self.keyed)


def _validate(ctx: CallContext, events: list) -> _Batch:
    """One pass over the events: validate, fill defaults and build what is to be stored."""
    batch = _Batch()
    error = batch.error
    logs = batch.logs
    keyed = batch.keyed
    now_ms = int(clock.now() * 1000)
    worker = ctx.worker or ""
    event_types = EVENT_TYPES
    levels = LOG_LEVELS
    log_keys = _LOG_KEYS
    md5 = _md5
    last_task: str | None = None
    last_lines: list[tuple] = []
    for ev in events:
        if type(ev) is not dict:
            error("event is not a JSON object")
            continue
        etype = ev.get("type")
        if etype == LOG:
            # Fast path for the common, well-formed log line; anything unusual takes the long way.
            task = ev.get("task")
            ts = ev.get("timestamp")
            level = ev.get("level")
            msg = ev.get("msg")
            if (type(task) is str and type(ts) is int and type(level) is str and level in levels
                    and type(msg) is str and task and ev.keys() <= log_keys and not ev.get("model_event")):
                if task != last_task:
                    last_lines = logs.setdefault(task, [])
                    last_task = task
                last_lines.append((ts, level, ev.get("worker") or worker, msg, None))
                continue
        if type(etype) is not str or etype not in event_types:
            error(f"invalid event type {etype!r} (one of {', '.join(sorted(event_types))})")
            continue
        task = ev.get("task")
        if not task or type(task) is not str:
            error("event has no 'task' field")
            continue
        ts = ev.get("timestamp")
        if ts is None:
            ts = ev["timestamp"] = now_ms
        elif type(ts) is not int:
            if type(ts) is float and math.isfinite(ts):
                ts = ev["timestamp"] = int(ts)
            else:
                error("event 'timestamp' must be a number (milliseconds since the epoch)")
                continue
        it = ev.get("iter")
        if it is not None:
            if type(it) is not int:
                if type(it) is float and it.is_integer():
                    it = ev["iter"] = int(it)
                else:
                    error("event 'iter' must be an integer")
                    continue
            if not INT64_MIN <= it <= INT64_MAX:
                error("event 'iter' does not fit a signed 64-bit integer")
                continue
        if etype == LOG:
            level = ev.get("level")
            if level is None:
                level = "info"
            elif type(level) is not str or (level not in levels and level.lower() not in levels):
                error(f"invalid log level {level!r} (one of {', '.join(sorted(levels))})")
                continue
            elif level not in levels:
                level = level.lower()
            msg = ev.get("msg")
            if type(msg) is not str:
                msg = "" if msg is None else str(msg)
            extra: dict | None = None
            if not ev.keys() <= log_keys:
                extra = {k: json_safe(v) for k, v in ev.items() if k not in log_keys}
            if ev.get("model_event"):
                batch.models.add(task)
            logs.setdefault(task, []).append((ts, level, ev.get("worker") or worker, msg, extra))
            continue
        for junk in _JUNK_KEYS:
            ev.pop(junk, None)
        reported = ev.get("value")
        ev = json_safe(ev)
        if ev.pop("model_event", None):
            ev["model_event"] = True
            batch.models.add(task)
        if not ev.get("worker"):
            ev["worker"] = worker
        metric = ev.get("metric")
        variant = ev.get("variant")
        if metric is None:
            metric = ev["metric"] = ""
        if variant is None:
            variant = ev["variant"] = ""
        if type(metric) is not str or type(variant) is not str:
            error("event 'metric' and 'variant' must be strings")
            continue
        if it is None:
            it = ev["iter"] = 0
        value = None
        if etype == SCALAR:
            if type(reported) is float:
                value = ev["value"]  # None for NaN/inf
            elif type(reported) is int:
                value = float(reported)
            else:
                error("scalar event 'value' must be a number")
                continue
        elif etype == VECTOR and not isinstance(ev.get("values"), list):
            error("vector event 'values' must be a list of numbers")
            continue
        key = ev.get("key")
        ident = "-".join((task, etype, str(it), metric, variant, "" if key is None else str(key)))
        event_key = md5(ident.encode("utf-8", "surrogatepass")).hexdigest()
        keyed.pop(event_key, None)
        keyed[event_key] = {"task": task, "type": etype, "iter": it, "metric": metric, "variant": variant,
                            "timestamp": ts, "timestamp_max": ts, "n_events": 1, "value": value,
                            "event_key": event_key, "doc": ev}
    return batch


def _log_rows(task: str, lines: list[tuple]) -> list[dict]:
    """One task's log lines as chunk rows of LOG_CHUNK lines, sorted by timestamp (stably).

    A chunk's `doc` is column-wise - {timestamp: [...], level: [...], worker: [...], msg: [...]}
    plus `extra` {index: {field: value}} for lines that carried other fields - which encodes
    about three times faster than a list of objects; `_expand_chunk` turns it back."""
    lines.sort(key=_first)
    rows = []
    for start in range(0, len(lines), LOG_CHUNK):
        piece = lines[start:start + LOG_CHUNK]
        stamps, levels, workers, msgs, extras = (list(col) for col in zip(*piece))
        doc: dict[str, Any] = {"timestamp": stamps, "level": levels, "worker": workers, "msg": msgs}
        if any(extras):
            doc["extra"] = {str(i): extra for i, extra in enumerate(extras) if extra}
        rows.append({"task": task, "type": LOG, "iter": None, "metric": None, "variant": None,
                     "timestamp": stamps[0], "timestamp_max": stamps[-1], "n_events": len(piece),
                     "value": None, "event_key": None, "doc": doc})
    return rows


def _expand_chunk(task: str, doc: dict) -> list[dict]:
    """The log events of one stored chunk, in its (timestamp) order."""
    events = [{"timestamp": ts, "type": LOG, "task": task, "level": level, "worker": worker, "msg": msg}
              for ts, level, worker, msg in zip(doc["timestamp"], doc["level"], doc["worker"], doc["msg"])]
    for index, extra in (doc.get("extra") or {}).items():
        events[int(index)].update(extra)
    return events


def _update_metrics(doc: dict, rows: Iterable[dict]) -> None:
    """Fold this batch's non-log events of one task (or model) into last_iteration/last_metrics."""
    max_iter = None
    series: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        it = row["iter"]
        if max_iter is None or it > max_iter:
            max_iter = it
        if row["type"] == SCALAR:
            series.setdefault((row["metric"], row["variant"]), []).append(row)
    if max_iter is not None and max_iter > (doc.get("last_iteration") or 0):
        doc["last_iteration"] = max_iter
    if not series:
        return
    last_metrics = dict(doc.get("last_metrics") or {})
    for (metric, variant), points in series.items():
        mkey, vkey = metric_hash(metric), metric_hash(variant)
        variants = dict(last_metrics.get(mkey) or {})
        entry = dict(variants.get(vkey) or {})
        count = entry.get("count") or 0
        total = (entry.get("mean_value") or 0.0) * count
        if not entry:
            entry = {"metric": metric, "variant": variant,
                     "first_value": points[0]["value"], "first_value_iteration": points[0]["iter"]}
        for row in points:
            value = row["value"]
            entry["value"] = value
            if value is None:  # NaN/inf (stored as null): the latest value, but no part of the statistics
                continue
            count += 1
            total += value
            if entry.get("min_value") is None or value < entry["min_value"]:
                entry["min_value"], entry["min_value_iteration"] = value, row["iter"]
            if entry.get("max_value") is None or value > entry["max_value"]:
                entry["max_value"], entry["max_value_iteration"] = value, row["iter"]
        label = points[-1]["doc"].get("x_axis_label")
        if label:
            entry["x_axis_label"] = label
        entry["count"] = count
        entry["mean_value"] = total / count if count else None
        variants[vkey] = entry
        last_metrics[mkey] = variants
    doc["last_metrics"] = last_metrics


def _store(ctx: CallContext, batch: _Batch) -> int:
    """Write a validated batch in one transaction; returns the number of events stored."""
    logs = batch.logs
    keyed_rows = list(batch.keyed.values())
    by_target: dict[str, list[dict]] = defaultdict(list)
    for row in keyed_rows:
        by_target[row["task"]].append(row)
    targets = set(logs) | set(by_target)
    now = clock.now()
    with ctx.store.tx() as conn:
        # Existence and freshness from the columns; documents only for what gets updated.
        found: dict[str, tuple[Any, float]] = {}
        for table, wanted in ((t.tasks, targets - batch.models), (t.models, targets & batch.models)):
            for ids in _chunks(sorted(wanted)):
                query = select(table.c.id, table.c.last_update).where(table.c.id.in_(ids))
                found.update((tid, (table, last_update)) for tid, last_update in conn.execute(query))
        missing = targets - set(found)
        if missing:
            dropped = sum(len(logs.pop(tid, ())) for tid in missing)
            dropped += sum(len(by_target.pop(tid, ())) for tid in missing)
            keyed_rows = [r for r in keyed_rows if r["task"] not in missing]
            shown = ", ".join(sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
            batch.error(f"invalid task id (no such task or model): {shown}", dropped)
        if not logs and not keyed_rows:
            return 0
        added = len(keyed_rows)
        if keyed_rows:
            for chunk in _chunks([r["event_key"] for r in keyed_rows]):
                conn.execute(delete(t.events).where(t.events.c.event_key.in_(chunk)))
            conn.execute(insert(t.events), keyed_rows)
        if logs:
            log_rows = [row for task, lines in logs.items() for row in _log_rows(task, lines)]
            conn.execute(insert(t.events), log_rows)
            added += sum(row["n_events"] for row in log_rows)
        stamp = clock.iso(now)
        for tid in set(logs) | set(by_target):
            table, last_update = found[tid]
            if tid not in by_target and now - (last_update or 0) < LAST_UPDATE_GRANULARITY_S:
                continue  # a log-only batch moments after the last update changes nothing else
            doc = ctx.store.get(conn, table, tid)
            if doc is None:  # deleted concurrently (possible on PostgreSQL); its events go with it
                continue
            _update_metrics(doc, by_target.get(tid, ()))
            doc["last_update"] = stamp
            ctx.store.save(conn, table, doc)
    return added


def _add(ctx: CallContext, events: list) -> dict:
    if len(events) > MAX_BATCH_EVENTS:
        raise errors.validation(f"batch of {len(events)} events exceeds the limit of {MAX_BATCH_EVENTS} "
                                f"events per request; nothing was stored, send it in smaller batches")
    batch = _validate(ctx, events)
    added = 0
    if batch:
        errors_before, logs_before = dict(batch.errors), dict(batch.logs)
        try:
            added = _store(ctx, batch)
        except IntegrityError:
            # Another request inserted one of these points between our delete and insert (only
            # possible where writers run concurrently, e.g. PostgreSQL): replace it again.
            batch.errors = defaultdict(int, errors_before)
            batch.logs = logs_before
            added = _store(ctx, batch)
    info = dict(batch.errors)
    if not added:
        reason = "; ".join(f"{msg} (x{count})" for msg, count in info.items()) or "no events in the request"
        raise errors.APIError(400, 131, f"Events not added: {reason}", {"errors_info": info})
    return {"added": added, "errors": sum(info.values()), "errors_info": info}


def _fence_and_dedup(ctx: CallContext, events: list) -> tuple[list, dict[str, int]]:
    """Events that carry an `attempt` come from Shipyard's agent, which delivers each task's log
    lines in order with strictly increasing timestamps. So: refuse them from a superseded claim,
    and drop log events at or below the task's high-water mark - re-sends of a batch whose
    answer was lost. That makes at-least-once delivery exactly-once."""
    fenced = {(e.get("task"), e.get("attempt")) for e in events
              if isinstance(e, dict) and e.get("attempt") is not None}
    if not fenced:
        return events, {}
    from server.services import leases
    marks: dict[tuple[str, int], int] = {}
    with ctx.store.tx() as conn:
        for task_id, attempt in fenced:
            doc = ctx.store.get(conn, t.tasks, task_id) if isinstance(task_id, str) else None
            if doc is not None:
                leases.check_fence(doc, attempt)
                mark = doc.get("_log_hwm") or {}
                marks[(task_id, attempt)] = int(mark.get("ts") or 0) if mark.get("attempt") == attempt else 0
    kept, newest = [], {}
    for event in events:
        key = (event.get("task"), event.get("attempt")) if isinstance(event, dict) else None
        if key in marks and event.get("type") == "log" and isinstance(event.get("timestamp"), int):
            if event["timestamp"] <= marks[key]:
                continue
            newest[key] = max(newest.get(key, 0), event["timestamp"])
        kept.append(event)
    return kept, newest


def _raise_marks(ctx: CallContext, newest: dict[tuple[str, int], int]) -> None:
    """Marks are per attempt: another machine's clock may be behind this one's."""
    with ctx.store.tx() as conn:
        for (task_id, attempt), ts in newest.items():
            doc = ctx.store.get(conn, t.tasks, task_id)
            mark = (doc or {}).get("_log_hwm") or {}
            if doc is not None and (mark.get("attempt") != attempt or ts > int(mark.get("ts") or 0)):
                doc["_log_hwm"] = {"attempt": attempt, "ts": ts}
                ctx.store.save(conn, t.tasks, doc)


@endpoint("events.add_batch")
def add_batch(ctx: CallContext, req: Request) -> dict:
    events = _incoming_events(req)
    kept, newest = _fence_and_dedup(ctx, events)
    if events and not kept:  # every event was a duplicate of one already stored
        return {"added": len(events), "errors": 0, "errors_info": {}, "duplicates": len(events)}
    result = _add(ctx, kept)
    _raise_marks(ctx, newest)
    if len(kept) < len(events):
        result = {**result, "added": result["added"] + len(events) - len(kept), "duplicates": len(events) - len(kept)}
    return result


@endpoint("events.add")
def add(ctx: CallContext, req: Request) -> dict:
    event = {k: v for k, v in req.body.items() if k != "__lines__"}
    if "__lines__" in req.body:
        lines = req.body["__lines__"]
        if len(lines) != 1:
            raise errors.validation("events.add takes exactly one event (use events.add_batch for several)")
        event = lines[0]
    return _add(ctx, [event])


# -- shared read helpers -----------------------------------------------------------------------


def _require_target(ctx: CallContext, conn, task_id: Any) -> str:
    """The task (or, for model events, model) whose events are read; 400/101 if unknown."""
    if not isinstance(task_id, str) or not task_id:
        raise errors.missing_field("task")
    for table in (t.tasks, t.models):
        if conn.execute(select(table.c.id).where(table.c.id == task_id)).first():
            return task_id
    raise errors.invalid_id("task", task_id)


def _metric_filter(spec: Any) -> dict[str, set[str] | None] | None:
    """Parse `metrics` ([{metric, variants}], [name], or {metric: [variants]}) into
    {metric: variants or None (all)}; None means no filter."""
    if not spec:
        return None
    wanted: dict[str, set[str] | None] = {}
    items = spec.items() if isinstance(spec, dict) else spec
    if not isinstance(spec, (dict, list)):
        raise errors.validation("field 'metrics' must be a list of {metric, variants}")
    for item in items:
        if isinstance(spec, dict):
            metric, variants = item
        elif isinstance(item, str):
            metric, variants = item, None
        elif isinstance(item, dict) and isinstance(item.get("metric"), str):
            metric, variants = item["metric"], item.get("variants")
        else:
            raise errors.validation("each entry of 'metrics' must be a metric name or {metric, variants}")
        if isinstance(variants, str):
            variants = [variants]
        if variants and not all(isinstance(v, str) for v in variants):
            raise errors.validation("'variants' must be a list of strings")
        if variants and wanted.get(metric, ()) is not None:
            wanted[metric] = set(wanted.get(metric) or ()) | set(variants)
        else:
            wanted[metric] = None
    return wanted


def _metric_clause(wanted: dict[str, set[str] | None] | None) -> Any:
    if not wanted:
        return None
    c = t.events.c
    clauses = []
    for metric, variants in wanted.items():
        if variants:
            clauses.append(and_(c.metric == metric, c.variant.in_(sorted(variants))))
        else:
            clauses.append(c.metric == metric)
    return or_(*clauses)


def _encode_scroll(state: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_scroll(scroll_id: Any, kind: str, **fields: type) -> dict | None:
    """The state inside a scroll_id we issued for `kind`, with `fields` of the given types."""
    if not scroll_id:
        return None
    try:
        raw = str(scroll_id)
        state = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, TypeError):
        raise errors.validation(f"invalid scroll_id {scroll_id!r}") from None
    if not isinstance(state, dict) or state.get("k") != kind:
        raise errors.validation(f"scroll_id {scroll_id!r} does not belong to this endpoint")
    for name, kind_type in fields.items():
        if type(state.get(name)) is not kind_type:
            raise errors.validation(f"invalid scroll_id {scroll_id!r}")
    return state


def _batch_size(req: Request, default: int, key: str = "batch_size") -> int:
    size = req.int(key, default)
    if size < 1:
        raise errors.validation(f"field '{key}' must be >= 1")
    return min(size, 10_000)


def _order(req: Request, default: str) -> str:
    order = (req.str("order") or default).lower()
    if order not in ("asc", "desc"):
        raise errors.validation("field 'order' must be 'asc' or 'desc'")
    return order


# -- logs --------------------------------------------------------------------------------------
_IS_LOG = text("events.type = 'log'")


def _log_total(conn, task_id: str) -> int:
    c = t.events.c
    query = select(func.coalesce(func.sum(c.n_events), 0)).where(c.task == task_id, _IS_LOG)
    return int(conn.execute(query).scalar_one())


def _chunk_events(conn, task_id: str, seq: int) -> list[dict]:
    doc = conn.execute(select(t.events.c.doc).where(t.events.c.seq == seq)).scalar_one()
    return _expand_chunk(task_id, doc)


def _log_page(conn, task_id: str, size: int, earlier: bool, from_ts: int | None) -> list[dict]:
    """The `size` log events nearest to `from_ts` in the paging direction (plus any others that
    share the last one's timestamp), ordered in that direction by (timestamp, seq, index).

    Chunks may overlap in time, so they are visited by their far edge: walking back, by latest
    timestamp descending; once `size` candidates are held and the next chunk ends before the
    candidates' edge, no later chunk can contribute."""
    c = t.events.c
    query = select(c.seq, c.timestamp, c.timestamp_max).where(c.task == task_id, _IS_LOG)
    if earlier:
        if from_ts is not None:
            query = query.where(c.timestamp < from_ts)
        query = query.order_by(c.timestamp_max.desc(), c.seq.desc())
    else:
        if from_ts is not None:
            query = query.where(c.timestamp_max > from_ts)
        query = query.order_by(c.timestamp.asc(), c.seq.asc())
    held: list[tuple] = []  # (timestamp, seq, index, event)
    chunks = conn.execute(query)  # streamed: a page usually needs only the first chunk or two
    for seq, ts_min, ts_max in chunks:
        if len(held) >= size:
            edge = held[size - 1][0]
            if (ts_max < edge) if earlier else (ts_min > edge):
                break
        for index, event in enumerate(_chunk_events(conn, task_id, seq)):
            ts = event["timestamp"]
            if from_ts is None or ((ts < from_ts) if earlier else (ts > from_ts)):
                held.append((ts, seq, index, event))
        held.sort(key=lambda item: item[:3], reverse=earlier)
        if len(held) > size:
            edge = held[size - 1][0]
            keep = size
            while keep < len(held) and held[keep][0] == edge:
                keep += 1
            del held[keep:]
    chunks.close()
    return [item[3] for item in held]


@endpoint("events.get_task_log")
def get_task_log(ctx: CallContext, req: Request) -> dict:
    """Page through a task's log by timestamp. navigate_earlier (default) walks back from
    `from_timestamp` (or the end); otherwise forward from it (or the start). A page never splits
    events sharing a timestamp, so asking again from the page's edge timestamp neither loses nor
    repeats lines."""
    size = _batch_size(req, 500)
    earlier = req.bool("navigate_earlier", True)
    order = _order(req, "desc" if earlier else "asc")
    from_ts = req.int("from_timestamp")
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        events = _log_page(conn, task_id, size, earlier, from_ts)
        total = _log_total(conn, task_id)
    if (order == "asc") == earlier:
        events.reverse()
    return {"events": events, "returned": len(events), "total": total}


def _all_log_events(conn, task_id: str) -> list[dict]:
    c = t.events.c
    held: list[tuple] = []
    query = select(c.seq, c.doc).where(c.task == task_id, _IS_LOG).order_by(c.timestamp, c.seq)
    for seq, doc in conn.execute(query):
        held.extend((event["timestamp"], seq, index, event)
                    for index, event in enumerate(_expand_chunk(task_id, doc)))
    held.sort(key=lambda item: item[:3])
    return [item[3] for item in held]


def _format_log_line(doc: dict) -> str:
    ts = doc.get("timestamp")
    when = clock.iso(ts / 1000.0) if isinstance(ts, (int, float)) else ""
    return f"{when} {doc.get('worker') or ''} {str(doc.get('level') or '').upper()} {doc.get('msg') or ''}"


@endpoint("events.download_task_log")
def download_task_log(ctx: CallContext, req: Request) -> Response:
    line_type = (req.str("line_type") or "json").lower()
    if line_type not in ("json", "text"):
        raise errors.validation("field 'line_type' must be 'json' or 'text'")
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        events = _all_log_events(conn, task_id)
    if line_type == "json":
        lines = [json.dumps(event, separators=(",", ":")) for event in events]
    else:
        lines = [_format_log_line(event) for event in events]
    body = "\n".join(lines) + ("\n" if lines else "")
    ext = "json" if line_type == "json" else "txt"
    return Response(body, media_type="application/x-ndjson" if line_type == "json" else "text/plain",
                    headers={"Content-Disposition": f'attachment; filename="task_{task_id}.{ext}"'})


# -- generic event reads -----------------------------------------------------------------------


@endpoint("events.get_task_events")
def get_task_events(ctx: CallContext, req: Request) -> dict:
    """A task's events in storage order, `batch_size` at a time; `scroll_id` continues."""
    size = _batch_size(req, 500)
    order = _order(req, "asc")
    asc = order == "asc"
    event_type = req.raw("event_type")
    types = [event_type] if isinstance(event_type, str) else (event_type or [])
    for et in types:
        if et not in EVENT_TYPES:
            raise errors.validation(f"invalid event_type {et!r}")
    scroll = _decode_scroll(req.raw("scroll_id"), "events", seq=int, index=int)
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        where = [c.task == task_id]
        if types:
            where.append(c.type.in_(types))
        clause = _metric_clause(_metric_filter(req.raw("metrics")))
        if clause is not None:
            where.append(clause)
        total = conn.execute(select(func.coalesce(func.sum(c.n_events), 0)).where(*where)).scalar_one()
        query = select(c.seq, c.type, c.doc).where(*where)
        if scroll is not None:
            query = query.where(c.seq >= scroll["seq"] if asc else c.seq <= scroll["seq"])
        rows = conn.execute(query.order_by(c.seq.asc() if asc else c.seq.desc()).limit(size + 1)).all()
    events: list[dict] = []
    position = (scroll["seq"], scroll["index"]) if scroll else None
    for seq, etype, doc in rows:
        batch = _expand_chunk(task_id, doc) if etype == LOG else [doc]
        indexes = range(len(batch)) if asc else range(len(batch) - 1, -1, -1)
        for index in indexes:
            if scroll and seq == scroll["seq"] and (index <= scroll["index"] if asc else index >= scroll["index"]):
                continue
            if len(events) == size:
                break
            events.append(batch[index])
            position = (seq, index)
        if len(events) == size:
            break
    if position is None:  # nothing returned yet: start from the beginning (or end) next time too
        position = (0, -1) if asc else (2 ** 62, 2 ** 31)
    state = {"k": "events", "seq": position[0], "index": position[1]}
    return {"events": events, "returned": len(events), "total": int(total),
            "scroll_id": _encode_scroll(state)}


# -- scalars -----------------------------------------------------------------------------------


def _downsample(xs: list, ys: list, samples: int) -> tuple[list, list]:
    """At most `samples` points: x split into equal intervals, y averaged per interval (null
    points - non-finite reports - are left out of the averages)."""
    if len(xs) <= samples:
        return xs, ys
    lo, hi = xs[0], xs[-1]
    width = (hi - lo) / samples or 1
    out_x: list = []
    out_y: list = []
    bucket = None
    acc = 0.0
    n = 0
    for x, y in zip(xs, ys):
        b = min(int((x - lo) / width), samples - 1)
        if b != bucket:
            if bucket is not None:
                out_y.append(acc / n if n else None)
            bucket, acc, n = b, 0.0, 0
            out_x.append(x)
        if y is not None:
            acc += y
            n += 1
    out_y.append(acc / n if n else None)
    return out_x, out_y


def _scalar_series(conn, task_id: str, metrics: Any, key: str) -> dict[tuple[str, str], tuple[list, list]]:
    c = t.events.c
    sort = c.iter if key == "iter" else c.timestamp
    query = (select(c.metric, c.variant, c.iter, c.timestamp, c.value)
             .where(c.task == task_id, c.type == SCALAR, c.iter != SINGLE_VALUE_ITER))
    clause = _metric_clause(_metric_filter(metrics))
    if clause is not None:
        query = query.where(clause)
    series: dict[tuple[str, str], tuple[list, list]] = {}
    for metric, variant, it, ts, value in conn.execute(query.order_by(c.metric, c.variant, sort, c.seq)):
        xs, ys = series.setdefault((metric, variant), ([], []))
        xs.append(it if key == "iter" else ts)
        ys.append(value)
    return series


def _histogram(conn, task_id: str, req: Request) -> dict:
    key = (req.str("key") or "iter").lower()
    if key not in ("iter", "timestamp", "iso_time"):
        raise errors.validation("field 'key' must be one of iter, timestamp, iso_time")
    samples = req.int("samples", 10_000)
    if samples < 1:
        raise errors.validation("field 'samples' must be >= 1")
    result: dict[str, dict] = {}
    for (metric, variant), (xs, ys) in _scalar_series(conn, task_id, req.raw("metrics"), key).items():
        xs, ys = _downsample(xs, ys, samples)
        if key == "iso_time":
            xs = [clock.iso(x / 1000.0) for x in xs]
        result.setdefault(metric, {})[variant] = {"name": variant, "x": xs, "y": ys}
    return result


@endpoint("events.scalar_metrics_iter_histogram")
def scalar_metrics_iter_histogram(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        return _histogram(conn, task_id, req)


@endpoint("events.multi_task_scalar_metrics_iter_histogram")
def multi_task_scalar_metrics_iter_histogram(ctx: CallContext, req: Request) -> dict:
    tasks: list[str] = req.str_list("tasks") or []
    if not tasks:
        raise errors.missing_field("tasks")
    merged: dict[str, dict] = {}
    with ctx.store.tx() as conn:
        for task_id in tasks:
            _require_target(ctx, conn, task_id)
            for metric, variants in _histogram(conn, task_id, req).items():
                for variant, data in variants.items():
                    merged.setdefault(metric, {}).setdefault(variant, {})[task_id] = data
    return merged


@endpoint("events.get_task_single_value_metrics")
def get_task_single_value_metrics(ctx: CallContext, req: Request) -> dict:
    tasks = req.str_list("tasks") or ([req.str("task")] if req.str("task") else [])
    if not tasks:
        raise errors.missing_field("tasks")
    c = t.events.c
    out = []
    with ctx.store.tx() as conn:
        for task_id in tasks:
            _require_target(ctx, conn, task_id)
            query = (select(c.metric, c.variant, c.value, c.timestamp)
                     .where(c.task == task_id, c.type == SCALAR, c.iter == SINGLE_VALUE_ITER)
                     .order_by(c.metric, c.variant))
            values = [{"metric": m, "variant": v, "value": val, "timestamp": ts}
                      for m, v, val, ts in conn.execute(query)]
            out.append({"task": task_id, "values": values})
    return {"tasks": out}


@endpoint("events.get_task_latest_scalar_values")
def get_task_latest_scalar_values(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        series = _scalar_series(conn, task_id, None, "iter")
    metrics: dict[str, list] = {}
    for (metric, variant), (_xs, ys) in series.items():
        tail = [y for y in ys[-100:] if y is not None]
        metrics.setdefault(metric, []).append({"name": variant, "last_value": ys[-1],
                                               "last_100_value": sum(tail) / len(tail) if tail else None})
    return {"metrics": [{"name": name, "variants": variants} for name, variants in metrics.items()]}


@endpoint("events.get_scalar_metrics_and_variants")
def get_scalar_metrics_and_variants(ctx: CallContext, req: Request) -> dict:
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        query = (select(c.metric, c.variant).where(c.task == task_id, c.type == SCALAR)
                 .distinct().order_by(c.metric, c.variant))
        metrics: dict[str, dict] = {}
        for metric, variant in conn.execute(query):
            metrics.setdefault(metric, {})[variant] = {"name": variant}
    return {"metrics": metrics}


@endpoint("events.vector_metrics_iter_histogram")
def vector_metrics_iter_histogram(ctx: CallContext, req: Request) -> dict:
    metric = req.str("metric", required=True)
    variant = req.str("variant", required=True)
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        query = (select(c.iter, c.doc).where(c.task == task_id, c.type == VECTOR, c.metric == metric,
                                             c.variant == variant).order_by(c.iter))
        rows = conn.execute(query).all()
    return {"images": [{"iter": it, "values": doc.get("values") or []} for it, doc in rows]}


# -- plots and debug images --------------------------------------------------------------------


def _latest_iterations(conn, task_id: str, etype: str, wanted: Any, iters: int,
                       below: dict[tuple[str, str], int] | None = None) -> list[int]:
    """Seqs of the events of the latest `iters` iterations of each (metric, variant)."""
    c = t.events.c
    query = select(c.seq, c.metric, c.variant, c.iter).where(c.task == task_id, c.type == etype)
    clause = _metric_clause(wanted)
    if clause is not None:
        query = query.where(clause)
    per_series: dict[tuple[str, str], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for seq, metric, variant, it in conn.execute(query):
        per_series[(metric, variant)][it].append(seq)
    seqs: list[int] = []
    for series, by_iter in per_series.items():
        for it in sorted(by_iter, reverse=True)[:iters]:
            seqs.extend(by_iter[it])
    return seqs


@endpoint("events.get_task_plots")
def get_task_plots(ctx: CallContext, req: Request) -> dict:
    iters = req.int("iters", 1)
    if iters < 1:
        raise errors.validation("field 'iters' must be >= 1")
    size = _batch_size(req, 500)
    scroll = _decode_scroll(req.raw("scroll_id"), "plots", offset=int)
    offset = scroll["offset"] if scroll else 0
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        seqs = _latest_iterations(conn, task_id, PLOT, _metric_filter(req.raw("metrics")), iters)
        rows: list[Any] = []
        for chunk in _chunks(seqs):
            rows.extend(conn.execute(select(c.seq, c.iter, c.metric, c.variant, c.doc).where(c.seq.in_(chunk))))
    rows.sort(key=lambda r: (-r[1], r[2], r[3], r[0]))
    page = rows[offset:offset + size]
    plots = [r[4] for r in page]
    return {"plots": plots, "returned": len(plots), "total": len(rows),
            "scroll_id": _encode_scroll({"k": "plots", "offset": offset + len(page)})}


@endpoint("events.debug_images")
def debug_images(ctx: CallContext, req: Request) -> dict:
    """Latest `iters` iterations of each requested task/metric; scrolling walks to earlier ones."""
    specs = req.list("metrics", required=True)
    iters = req.int("iters", 1)
    if iters < 1:
        raise errors.validation("field 'iters' must be >= 1")
    earlier = req.bool("navigate_earlier", True)
    scroll = _decode_scroll(req.raw("scroll_id"), "images", bounds=dict) if not req.bool("refresh") else None
    bounds: dict[str, int] = dict((scroll or {}).get("bounds") or {})
    c = t.events.c
    out = []
    with ctx.store.tx() as conn:
        for spec in specs:
            if not isinstance(spec, dict) or not isinstance(spec.get("task"), str):
                raise errors.validation("each entry of 'metrics' must be {task, metric, variants}")
            task_id = _require_target(ctx, conn, spec["task"])
            metric = spec.get("metric")
            where = [c.task == task_id, c.type == IMAGE]
            if metric:
                where.append(c.metric == metric)
            variants = spec.get("variants")
            if variants:
                where.append(c.variant.in_([variants] if isinstance(variants, str) else list(variants)))
            state_key = f"{task_id}/{metric or ''}"
            bound = bounds.get(state_key)
            if bound is not None:
                where.append(c.iter < bound if earlier else c.iter > bound)
            iter_query = select(c.iter).where(*where).distinct()
            iter_query = iter_query.order_by(c.iter.desc() if earlier else c.iter.asc()).limit(iters)
            chosen = [row[0] for row in conn.execute(iter_query)]
            iterations = []
            if chosen:
                rows = conn.execute(select(c.iter, c.doc).where(*where, c.iter.in_(chosen))
                                    .order_by(c.iter.desc(), c.variant, c.seq)).all()
                grouped: dict[int, list] = {}
                for it, doc in rows:
                    grouped.setdefault(it, []).append(doc)
                iterations = [{"iter": it, "events": grouped[it]} for it in sorted(grouped, reverse=True)]
                bounds[state_key] = min(chosen) if earlier else max(chosen)
            out.append({"task": task_id, "metric": metric or "", "iterations": iterations})
    return {"metrics": out, "scroll_id": _encode_scroll({"k": "images", "bounds": bounds})}


# -- deletion ----------------------------------------------------------------------------------


def delete_task_events(conn, task_id: str) -> int:
    """Delete every event of a task (or model) in `conn`'s transaction; returns how many events
    went (log rows hold many lines, so a DELETE's rowcount undercounts)."""
    c = t.events.c
    count = conn.execute(select(func.coalesce(func.sum(c.n_events), 0)).where(c.task == task_id)).scalar_one()
    conn.execute(delete(t.events).where(c.task == task_id))
    return int(count)


@endpoint("events.delete_for_task")
def delete_for_task(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        return {"deleted": delete_task_events(conn, _require_target(ctx, conn, req.raw("task")))}


@endpoint("events.clear_task_log")
def clear_task_log(ctx: CallContext, req: Request) -> dict:
    """Delete a task's log lines; with `threshold_sec`, only those older than that many seconds."""
    threshold = req.int("threshold_sec")
    c = t.events.c
    with ctx.store.tx() as conn:
        task_id = _require_target(ctx, conn, req.raw("task"))
        if threshold is None:
            deleted = _log_total(conn, task_id)
            conn.execute(delete(t.events).where(c.task == task_id, _IS_LOG))
            return {"deleted": deleted}
        cutoff = int((clock.now() - threshold) * 1000)
        old = (c.task == task_id, _IS_LOG, c.timestamp_max < cutoff)
        deleted = int(conn.execute(select(func.coalesce(func.sum(c.n_events), 0)).where(*old)).scalar_one())
        conn.execute(delete(t.events).where(*old))
        straddling = conn.execute(select(c.seq, c.doc).where(c.task == task_id, _IS_LOG, c.timestamp < cutoff))
        for seq, doc in straddling.all():
            kept = [e for e in _expand_chunk(task_id, doc) if e["timestamp"] >= cutoff]
            deleted += len(doc["timestamp"]) - len(kept)
            lines = [(e["timestamp"], e["level"], e["worker"], e["msg"],
                      {k: v for k, v in e.items() if k not in _LOG_KEYS} or None) for e in kept]
            row = _log_rows(task_id, lines)[0]
            conn.execute(t.events.update().where(c.seq == seq).values(
                timestamp=row["timestamp"], timestamp_max=row["timestamp_max"], n_events=row["n_events"],
                doc=row["doc"]))
    return {"deleted": deleted}
