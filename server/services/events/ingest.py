"""events.add_batch / events.add: metric and log ingest.

Ingest is the hot path (a training run sends thousands of log lines a second): one pass over
the events in plain Python, then one transaction - a refused request writes nothing: the
documents of the tasks with metric rows read (and on PostgreSQL locked) at once, every row
written in one statement (SQLite: re-reported points deleted, then an executemany; PostgreSQL:
one insert over the rows as JSON whose conflict clause replaces a re-reported point,
prepared.ArrayWrite), at most one document update per task and only the changed task_metrics
rows. All statements are prepared (no SQLAlchemy per call) and on PostgreSQL pipelined: a scalars-and-logs batch is three round trips (pool ping,
BEGIN + the locked document read, every write + COMMIT; it was eleven). Events from
Shipyard's agent carry a lease `attempt`: they are fenced against superseded claims and log
re-sends are dropped below a per-attempt high-water mark. The agent's log batches (fenced, logs
only) take one transaction for all of it, the task's document read and written once
(`_add_fenced_logs`; issue 24). Row format: events_store.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from typing import Any, Iterable, NamedTuple

from sqlalchemy import bindparam, delete
from sqlalchemy.exc import IntegrityError

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events.store import (
    EVENT_TYPES,
    LOG,
    LOG_KEYS,
    SCALAR,
    VECTOR,
    json_safe,
    log_rows,
    metric_hash,
)
from server.storage import tables as t
from server.storage.prepared import Prepared, insert_rows
from shipyard import clock
from shipyard.protocol import Subcode

LOG_LEVELS = frozenset({"notset", "debug", "verbose", "info", "warn", "warning", "error", "fatal", "critical"})
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
MAX_BATCH_EVENTS = 100_000
LAST_UPDATE_GRANULARITY_S = 1.0  # log-only batches refresh a task's last_update at most this often
# Request-format fields every client sends that are not part of an event.
_JUNK_KEYS = ("method", "allow_locked")
_md5 = hashlib.md5


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
    """One pass over the events: validate, fill defaults and build what is to be stored. The
    common well-formed log line is handled inline (the hot path); anything else by
    `_other_event`."""
    batch = _Batch()
    logs = batch.logs
    worker = ctx.worker or ""
    now_ms = int(clock.now() * 1000)
    levels, log_keys = LOG_LEVELS, LOG_KEYS
    last_task: str | None = None
    last_lines: list[tuple] = []
    for ev in events:
        if type(ev) is dict and ev.get("type") == LOG:
            task, ts, level, msg, who = ev.get("task"), ev.get("timestamp"), ev.get("level"), ev.get("msg"), \
                ev.get("worker")
            if (type(task) is str and type(ts) is int and ts <= INT64_MAX and type(level) is str and level in levels
                    and type(msg) is str and (who is None or type(who) is str) and task
                    and ev.keys() <= log_keys and not ev.get("model_event")):
                if task != last_task:
                    last_lines = logs.setdefault(task, [])
                    last_task = task
                last_lines.append((ts, level, who or worker, msg, None))
                continue
        _other_event(batch, ev, worker, now_ms)
    return batch


def _other_event(batch: _Batch, ev: Any, worker: str, now_ms: int) -> None:
    if type(ev) is not dict:
        return batch.error("event is not a JSON object")
    etype = ev.get("type")
    if type(etype) is not str or etype not in EVENT_TYPES:
        return batch.error(f"invalid event type {etype!r} (one of {', '.join(sorted(EVENT_TYPES))})")
    task = ev.get("task")
    if not task or type(task) is not str:
        return batch.error("event has no 'task' field")
    problem = _normalize_timestamp_and_iter(ev, now_ms) or schema.EVENTS[etype].problem(ev, "event")
    if problem:
        return batch.error(problem)
    if etype == LOG:
        return _log_event(batch, ev, task, worker)
    return _keyed_event(batch, ev, etype, task, worker)


def _normalize_timestamp_and_iter(ev: dict, now_ms: int) -> str | None:
    """Fill in a missing timestamp, make whole floats ints; what is wrong, or None."""
    ts = ev.get("timestamp")
    if ts is None:
        ev["timestamp"] = ts = now_ms
    elif type(ts) is not int:
        if not (type(ts) is float and math.isfinite(ts)):
            return "event 'timestamp' must be a number (milliseconds since the epoch)"
        ev["timestamp"] = ts = int(ts)
    if not INT64_MIN <= ts <= INT64_MAX:
        return "event 'timestamp' does not fit a signed 64-bit integer"
    it = ev.get("iter")
    if it is not None:
        if type(it) is not int:
            if not (type(it) is float and it.is_integer()):
                return "event 'iter' must be an integer"
            it = ev["iter"] = int(it)
        if not INT64_MIN <= it <= INT64_MAX:
            return "event 'iter' does not fit a signed 64-bit integer"
    return None


def _log_event(batch: _Batch, ev: dict, task: str, worker: str) -> None:
    """A log line off the fast path: a default or differently cased level, extra fields, a
    non-string message, or a model's log."""
    level = ev.get("level")
    if level is None:
        level = "info"
    elif type(level) is not str or (level not in LOG_LEVELS and level.lower() not in LOG_LEVELS):
        return batch.error(f"invalid log level {level!r} (one of {', '.join(sorted(LOG_LEVELS))})")
    else:
        level = level.lower()
    msg = ev.get("msg")
    if type(msg) is not str:
        msg = "" if msg is None else str(msg)
    extra = None if ev.keys() <= LOG_KEYS else {k: json_safe(v) for k, v in ev.items() if k not in LOG_KEYS}
    if ev.get("model_event"):
        batch.models.add(task)
    batch.logs.setdefault(task, []).append((ev["timestamp"], level, ev.get("worker") or worker, msg, extra))


def _keyed_event(batch: _Batch, ev: dict, etype: str, task: str, worker: str) -> None:
    """A metric event (scalar, plot, vector, image...): one row, keyed so a re-reported point
    replaces the earlier one."""
    for junk in _JUNK_KEYS:
        ev.pop(junk, None)
    reported = ev.get("value")
    ev = _stored_form(batch, ev, task, worker)
    metric, variant = ev["metric"], ev["variant"]
    if type(metric) is not str or type(variant) is not str:
        return batch.error("event 'metric' and 'variant' must be strings")
    it = ev.get("iter")
    if it is None:
        it = ev["iter"] = 0
    problem, value = _keyed_value(etype, reported, ev)
    if problem:
        return batch.error(problem)
    key = ev.get("key")
    ident = "-".join((task, etype, str(it), metric, variant, "" if key is None else str(key)))
    event_key = _md5(ident.encode("utf-8", "surrogatepass")).hexdigest()
    batch.keyed.pop(event_key, None)
    batch.keyed[event_key] = {"task": task, "type": etype, "iter": it, "metric": metric, "variant": variant,
                              "timestamp": ev["timestamp"], "timestamp_max": ev["timestamp"], "n_events": 1,
                              "value": value, "event_key": event_key, "doc": ev}


def _stored_form(batch: _Batch, ev: dict, task: str, worker: str) -> dict:
    """The event as stored: JSON-safe, with its worker, and empty metric/variant for none."""
    ev = json_safe(ev)
    if ev.pop("model_event", None):
        ev["model_event"] = True
        batch.models.add(task)
    if not ev.get("worker"):
        ev["worker"] = worker
    for field in ("metric", "variant"):
        if ev.get(field) is None:
            ev[field] = ""
    return ev


def _keyed_value(etype: str, reported: Any, ev: dict) -> tuple[str | None, float | None]:
    """(problem, the row's `value` column): a scalar's number (None for NaN/inf), else None."""
    if etype == SCALAR:
        if type(reported) is float:
            return None, ev["value"]  # None for NaN/inf
        if type(reported) is int:
            return None, float(reported)
        return "scalar event 'value' must be a number", None
    if etype == VECTOR and not isinstance(ev.get("values"), list):
        return "vector event 'values' must be a list of numbers", None
    return None, None


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
        variants[vkey] = _fold_points(dict(variants.get(vkey) or {}), metric, variant, points)
        last_metrics[mkey] = variants
    doc["last_metrics"] = last_metrics


def _fold_points(entry: dict, metric: str, variant: str, points: list[dict]) -> dict:
    """One series' last_metrics entry with this batch's points folded in (count, mean, min, max)."""
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
    return entry


def _store(ctx: CallContext, batch: _Batch) -> int:
    """Write a validated batch in one transaction; returns the number of events stored."""
    with ctx.store.tx(pipelined=True) as conn:
        return _store_in(ctx, conn, batch)


def _store_in(ctx: CallContext, conn: Any, batch: _Batch, known: dict[str, dict] | None = None,
              dirty: frozenset[str] = frozenset()) -> int:
    """Write a validated batch in the transaction `conn`. `known`: task documents this request
    already read in it (used as they are); `dirty`: those of them it changed (saved in any case)."""
    logs = batch.logs
    keyed_rows = list(batch.keyed.values())
    by_target: dict[str, list[dict]] = defaultdict(list)
    for row in keyed_rows:
        by_target[row["task"]].append(row)
    targets = set(logs) | set(by_target)
    now = clock.now()
    found = _find_targets(ctx, conn, targets, set(by_target), batch.models, known or {})
    missing = targets - set(found)
    if missing:
        dropped = sum(len(logs.pop(tid, ())) for tid in missing)
        dropped += sum(len(by_target.pop(tid, ())) for tid in missing)
        keyed_rows = [r for r in keyed_rows if r["task"] not in missing]
        shown = ", ".join(sorted(missing)[:5]) + (" ..." if len(missing) > 5 else "")
        batch.error(f"invalid task id (no such task or model): {shown}", dropped)
    if not logs and not keyed_rows:
        return 0
    chunk_rows = [row for task, lines in logs.items() for row in log_rows(task, lines)]
    _write_events(conn, keyed_rows, chunk_rows)
    _touch_targets(ctx, conn, set(logs) | set(by_target), found, by_target, now, dirty)
    return len(keyed_rows) + sum(row["n_events"] for row in chunk_rows)


# SQLite: a re-reported point's row deleted, then every row inserted
_INSERT_EVENT = insert_rows(t.events)
_DELETE_POINT = Prepared(delete(t.events).where(t.events.c.event_key == bindparam("event_key")))
# PostgreSQL: a re-reported point (same event_key) replaces the stored row in the same statement,
# with a new seq; the conflict is found through the unique index itself, whatever the plan
_PUT_EVENTS = insert_rows(t.events, conflict=("event_key",), where="event_key IS NOT NULL",
                          update=[c.name for c in t.events.columns if c.name not in ("seq", "event_key")],
                          renew=("seq",))


def _write_events(conn: Any, keyed_rows: list[dict], chunk_rows: list[dict]) -> None:
    """Every row in one statement (prepared.ArrayWrite). A re-reported point replaces the stored
    one and takes a new seq, as readers expect: on PostgreSQL by the insert's conflict clause;
    on SQLite deleted first, one keyed delete a point.

    Not a keyed DELETE on PostgreSQL: psycopg prepares a statement on its fifth run, and the
    generic plan PostgreSQL then keeps for the connection's life was made while the events table
    was small: a sequential scan. At 200 reporters it averaged 1.2 ms a point and took more
    than a core of PostgreSQL (pg_stat_statements; an `= ANY(...)` delete of all the points had
    the same fate). The conflict clause finds the row through the unique index, with no plan to
    choose."""
    if conn.dialect.name == "postgresql":
        conn.execute_many(_PUT_EVENTS, keyed_rows + chunk_rows)
        return
    if keyed_rows:
        conn.execute_many(_DELETE_POINT, keyed_rows)
    conn.execute_many(_INSERT_EVENT, keyed_rows + chunk_rows)


class _Target(NamedTuple):
    table: Any
    last_update: float
    doc: dict | None  # None: not read yet (a log-only target: read only when its stamp is due)


def _find_targets(ctx: CallContext, conn: Any, targets: set[str], with_metrics: set[str], models: set[str],
                  known: dict[str, dict]) -> dict[str, _Target]:
    """The targets that exist (task or model table): the documents of those with metric rows,
    which are written in any case, and of those in `known`; of the rest only their last_update."""
    found = {tid: _Target(t.tasks, _doc_time(doc), doc) for tid, doc in known.items() if tid in targets}
    for table, wanted in ((t.tasks, targets - models), (t.models, targets & models)):
        wanted = wanted - found.keys()
        if not wanted:
            continue
        # locked: a concurrent batch of the same task waits here, then sees this one's points
        # (deleting them instead of clashing with them) and its document
        docs = ctx.store.get_each(conn, table, sorted(wanted & with_metrics), lock=True)
        found.update((tid, _Target(table, _doc_time(doc), doc)) for tid, doc in docs.items())
        stamps = ctx.store.last_updates(conn, table, sorted(wanted - with_metrics))
        found.update((tid, _Target(table, stamp or 0.0, None)) for tid, stamp in stamps.items())
    return found


def _doc_time(doc: dict) -> float:
    """A document's last_update as its column holds it (0 when it has none)."""
    try:
        return clock.parse_iso(doc.get("last_update") or "")
    except (TypeError, ValueError):
        return 0.0


def _touch_targets(ctx: CallContext, conn: Any, targets: set[str], found: dict[str, _Target],
                   by_target: dict[str, list[dict]], now: float, dirty: frozenset[str]) -> None:
    """Fold the metric rows into each target's document and stamp its last_update; a log-only
    batch moments after the last update changes nothing. A document in `dirty` was changed by
    this request already: it is saved in any case, once."""
    stamp = clock.iso(now)
    for tid in targets:
        table, last_update, doc = found[tid]
        due = tid in by_target or now - (last_update or 0) >= LAST_UPDATE_GRANULARITY_S
        if not due and tid not in dirty:
            continue
        if doc is None:
            doc = ctx.store.get(conn, table, tid)
        if doc is None:  # deleted concurrently (possible on PostgreSQL); its events go with it
            continue
        if due:
            _update_metrics(doc, by_target.get(tid, ()))
            doc["last_update"] = stamp
        ctx.store.save(conn, table, doc)


def _check_size(events: list) -> None:
    if len(events) > MAX_BATCH_EVENTS:
        raise errors.validation(f"batch of {len(events)} events exceeds the limit of {MAX_BATCH_EVENTS} "
                                f"events per request; nothing was stored, send it in smaller batches")


def _added(batch: _Batch, added: int) -> dict:
    """The answer to a stored batch, or the 400 when nothing of it was stored."""
    info = dict(batch.errors)
    if not added:
        reason = "; ".join(f"{msg} (x{count})" for msg, count in info.items()) or "no events in the request"
        raise errors.APIError(400, Subcode.EVENTS_NOT_ADDED, f"Events not added: {reason}", {"errors_info": info})
    return {"added": added, "errors": sum(info.values()), "errors_info": info}


def _add(ctx: CallContext, events: list) -> dict:
    _check_size(events)
    batch = _validate(ctx, events)
    added = 0
    if batch:
        errors_before, logs_before = dict(batch.errors), dict(batch.logs)
        try:
            added = _store(ctx, batch)
        except IntegrityError:
            # Another request inserted one of these points between our delete and insert: not
            # expected (a task's writers take turns on its locked row), but replace it again.
            batch.errors = defaultdict(int, errors_before)
            batch.logs = logs_before
            added = _store(ctx, batch)
    return _added(batch, added)


def _fenced(events: list) -> set[tuple[Any, Any]]:
    """The (task, attempt) pairs the events carry: Shipyard's agent's, fenced."""
    fenced: set[tuple[Any, Any]] = {(e.get("task"), e.get("attempt")) for e in events
              if type(e) is dict and e.get("attempt") is not None and type(e.get("task")) is str}
    if any(type(attempt) is not int for _, attempt in fenced):
        raise errors.validation("event 'attempt' must be an integer")
    return fenced


def _read_fenced(ctx: CallContext, conn: Any, fenced: set[tuple[Any, Any]]) -> tuple[dict, dict[str, dict]]:
    """Refuse a superseded claim; ({(task, attempt): its log high-water mark}, the documents)."""
    from server.services import leases
    marks: dict[tuple[str, int], int] = {}
    docs: dict[str, dict] = {}
    for task_id, attempt in fenced:
        doc = ctx.store.get(conn, t.tasks, task_id) if isinstance(task_id, str) else None
        if doc is not None:
            leases.check_fence(doc, attempt)
            mark = doc.get("_log_hwm") or {}
            marks[(task_id, attempt)] = int(mark.get("ts") or 0) if mark.get("attempt") == attempt else 0
            docs[task_id] = doc
    return marks, docs


def _fence_and_dedup(ctx: CallContext, events: list,
                     fenced: set[tuple[Any, Any]]) -> tuple[list, dict[tuple[str, int], int]]:
    """Events that carry an `attempt` come from Shipyard's agent, which delivers each task's log
    lines in order with strictly increasing timestamps. So: refuse them from a superseded claim,
    and drop log events at or below the task's high-water mark - re-sends of a batch whose
    answer was lost. That makes at-least-once delivery exactly-once."""
    if not fenced:
        return events, {}
    with ctx.store.tx() as conn:
        marks, _ = _read_fenced(ctx, conn, fenced)
    return _dedup(events, marks)


def _dedup(events: list, marks: dict[tuple[str, int], int]) -> tuple[list, dict[tuple[str, int], int]]:
    """The events above their task's high-water mark, and the new marks."""
    kept: list = []
    newest: dict[tuple[str, int], int] = {}
    for event in events:
        key: Any = (event.get("task"), event.get("attempt")) if type(event) is dict else None
        if key is not None and type(key[0]) is str and key in marks and event.get("type") == "log" and isinstance(event.get("timestamp"), int):
            if event["timestamp"] <= marks[key]:
                continue
            newest[key] = max(newest.get(key, 0), event["timestamp"])
        kept.append(event)
    return kept, newest


def _raise_marks(ctx: CallContext, newest: dict[tuple[str, int], int]) -> None:
    """Marks are per attempt: another machine's clock may be behind this one's."""
    if not newest:  # no agent's log lines: no transaction (a pooled connection and two round trips)
        return
    with ctx.store.tx() as conn:
        for (task_id, attempt), ts in newest.items():
            doc = ctx.store.get(conn, t.tasks, task_id)
            if doc is not None and _raise_mark(doc, attempt, ts):
                ctx.store.save(conn, t.tasks, doc)


def _raise_mark(doc: dict, attempt: int, ts: int) -> bool:
    """Raise `doc`'s log high-water mark to `ts` for `attempt`; whether it changed."""
    mark = doc.get("_log_hwm") or {}
    if mark.get("attempt") == attempt and ts <= int(mark.get("ts") or 0):
        return False
    doc["_log_hwm"] = {"attempt": attempt, "ts": ts}
    return True


def _all_logs(events: list) -> bool:
    return all(type(e) is dict and e.get("type") == LOG for e in events)


def _add_fenced_logs(ctx: CallContext, events: list, fenced: set[tuple[Any, Any]]) -> dict:
    """The agent's log batch in one transaction: fence, drop re-sent lines, store the rest and
    raise the marks, each task document read once and written at most once (it was three
    transactions, two of them writes: issue 24's log throughput)."""
    _check_size(events)
    with ctx.store.tx(pipelined=True) as conn:
        marks, docs = _read_fenced(ctx, conn, fenced)
        kept, newest = _dedup(events, marks)
        if not kept:  # every event was a duplicate of one already stored
            return {"added": len(events), "errors": 0, "errors_info": {}, "duplicates": len(events)}
        changed = frozenset(task_id for (task_id, attempt), ts in newest.items()
                            if task_id in docs and _raise_mark(docs[task_id], attempt, ts))
        batch = _validate(ctx, kept)
        result = _added(batch, _store_in(ctx, conn, batch, docs, changed) if batch else 0)
    return _with_duplicates(result, events, kept)


def _with_duplicates(result: dict, events: list, kept: list) -> dict:
    if len(kept) < len(events):
        result = {**result, "added": result["added"] + len(events) - len(kept), "duplicates": len(events) - len(kept)}
    return result


@endpoint("events.add_batch")
def add_batch(ctx: CallContext, req: Request) -> dict:
    events = _incoming_events(req)
    fenced = _fenced(events)
    if fenced and _all_logs(events):
        return _add_fenced_logs(ctx, events, fenced)
    kept, newest = _fence_and_dedup(ctx, events, fenced)
    if events and not kept:  # every event was a duplicate of one already stored
        return {"added": len(events), "errors": 0, "errors_info": {}, "duplicates": len(events)}
    result = _add(ctx, kept)
    _raise_marks(ctx, newest)
    return _with_duplicates(result, events, kept)


@endpoint("events.add")
def add(ctx: CallContext, req: Request) -> dict:
    event = {k: v for k, v in req.body.items() if k != "__lines__"}
    if "__lines__" in req.body:
        lines = req.body["__lines__"]
        if len(lines) != 1:
            raise errors.validation("events.add takes exactly one event (use events.add_batch for several)")
        event = lines[0]
    return _add(ctx, [event])
