"""Workers' machine stats over time: stored from workers.status_report, read by
workers.get_stats, workers.get_activity_report and workers.get_metric_keys.

One row per report holds the report's `machine_stats` (the known keys only), so a report costs
one insert whatever the number of cores or GPUs. Rows older than RETENTION_S are pruned while
reports arrive. Reading buckets the rows into fixed intervals aligned to the epoch, as the
reference server's date histogram does: every interval between from_date and to_date is
answered (empty ones with zeros), the last one is left out while it is still incomplete, and
`dates` are epoch milliseconds (what the reference server and the web UI use, whatever the
schema's description says).

A metric's variants are `total` for a single number and "0", "1", ... for a per-device list;
its category is the part of its name before the first underscore (`cpu_usage` -> `cpu`).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import delete, select

from server import errors
from server.rpc import schema
from server.storage import tables as t
from shipyard import clock
from shipyard.protocol import Subcode

RETENTION_S = 7 * 24 * 3600
PRUNE_EVERY_S = 60.0
MIN_INTERVAL_S = 40  # the reference server's smallest chart interval for worker stats
MAX_POINTS = 10_000  # intervals one answer may hold
MAX_EPOCH_S = 1e11  # year 5138: larger "seconds" are a mistake (milliseconds, or garbage)
_S = t.worker_stats
_last_prune = [0.0]


def report_time(timestamp: Any) -> float:
    """The report's time in epoch seconds: its `timestamp` (milliseconds, as agents send it, or
    seconds), else now."""
    if isinstance(timestamp, (int, float)) and not isinstance(timestamp, bool):
        if timestamp > 1e11:
            return timestamp / 1000.0
        if timestamp > 1e8:
            return float(timestamp)
    return clock.now()


def record(conn, worker: str, task: str | None, machine_stats: dict, timestamp: Any) -> None:
    stats = {k: v for k, v in machine_stats.items() if k in schema.MACHINE_STATS.fields and v is not None}
    if not stats:
        return
    conn.execute(_S.insert().values(worker=worker, timestamp=report_time(timestamp), task=task or None,
                                    stats=stats))
    now = clock.now()
    if now - _last_prune[0] >= PRUNE_EVERY_S:
        _last_prune[0] = now
        conn.execute(delete(_S).where(_S.c.timestamp < now - RETENTION_S))


def variants(value: Any) -> Iterable[tuple[str, float]]:
    """(variant, value) pairs of one machine-stats value."""
    if isinstance(value, list):
        return [(str(i), float(v)) for i, v in enumerate(value) if isinstance(v, (int, float))]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [("total", float(value))]
    return []


def _rows(conn, worker_ids: list[str] | None, since: float | None = None, until: float | None = None):
    query = select(_S.c.worker, _S.c.timestamp, _S.c.task, _S.c.stats)
    if worker_ids:
        query = query.where(_S.c.worker.in_(worker_ids))
    if since is not None:
        query = query.where(_S.c.timestamp >= since)
    if until is not None:
        query = query.where(_S.c.timestamp <= until)
    return conn.execute(query).all()


def metric_keys(conn, worker_ids: list[str] | None) -> dict[str, list[str]]:
    """{category: [metric, ...]} of the metrics the workers reported (404-like 400 when none)."""
    found: dict[str, set[str]] = defaultdict(set)
    for row in _rows(conn, worker_ids):
        for metric, value in (row.stats or {}).items():
            if variants(value):
                found[metric.partition("_")[0]].add(metric)
    if not found:
        raise errors.APIError(400, Subcode.WORKER_STATS_NOT_FOUND, f"No statistic metrics found for the workers: worker_ids={worker_ids}")
    return {category: sorted(keys) for category, keys in sorted(found.items())}


@dataclass(frozen=True)
class Range:
    """A request's time range as buckets: `interval` seconds each, aligned to the epoch."""

    from_date: float
    to_date: float
    interval: int

    @classmethod
    def from_request(cls, body: dict, min_interval: int) -> "Range":
        if body["interval"] < 1:
            raise errors.validation("field 'interval' must be at least 1 (seconds)")
        for key in ("from_date", "to_date"):
            if not math.isfinite(body[key]) or not 0 <= body[key] < MAX_EPOCH_S:
                raise errors.validation(f"field '{key}' must be a time in seconds since the epoch")
        range_ = cls(float(body["from_date"]), float(body["to_date"]), max(int(body["interval"]), min_interval))
        if range_.from_date >= range_.to_date:
            raise errors.validation("field 'from_date' must be less than 'to_date'")
        if (range_.to_date - range_.from_date) / range_.interval > MAX_POINTS:
            raise errors.validation(f"field 'interval' is too small for the range: at most {MAX_POINTS} points")
        return range_

    def bucket(self, ts: float) -> int:
        return int(ts // self.interval) * self.interval

    def starts(self) -> list[int]:
        """Every bucket from from_date to to_date, less a last one still incomplete."""
        last = self.to_date - 0.9 * self.interval
        return [b for b in range(self.bucket(self.from_date), self.bucket(self.to_date) + 1, self.interval)
                if b <= last]


def _aggregate(values: list[float], how: str) -> float:
    if not values:
        return 0.0
    return {"avg": sum(values) / len(values), "min": min(values), "max": max(values)}[how]


def _metric_entry(metric: str, variant: str | None, buckets: dict[int, list[float]], starts: list[int],
                  aggregations: list[str]) -> dict:
    entry: dict[str, Any] = {"metric": metric}
    if variant is not None:
        entry["variant"] = variant
    entry["dates"] = [b * 1000 for b in starts]
    entry["stats"] = [{"aggregation": how, "values": [_aggregate(buckets.get(b, []), how) for b in starts]}
                      for how in aggregations]
    return entry


def _collect(rows, range_: Range, keys: set[str], split: bool) -> dict:
    """{worker: {metric: {variant or None: {bucket: [values]}}}} from the stored rows."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for row in rows:
        bucket = range_.bucket(row.timestamp)
        for metric, value in (row.stats or {}).items():
            if metric not in keys:
                continue
            for variant, number in variants(value):
                out[row.worker][metric][variant if split else None][bucket].append(number)
    return out


def stats(conn, body: dict) -> list[dict]:
    """workers.get_stats' `workers` list."""
    range_ = Range.from_request(body, MIN_INTERVAL_S)
    wanted: dict[str, list[str]] = defaultdict(list)
    for item in body["items"]:
        how = item.get("aggregation") or "avg"
        if how not in wanted[item["key"]]:
            wanted[item["key"]].append(how)
    rows = _rows(conn, body.get("worker_ids"), range_.from_date, range_.to_date)
    collected = _collect(rows, range_, set(wanted), bool(body.get("split_by_variant")))
    starts = range_.starts()
    return [{"worker": worker, "metrics": [
        _metric_entry(metric, variant, buckets, starts, wanted[metric])
        for metric in wanted if metric in metrics for variant, buckets in sorted(metrics[metric].items(),
                                                                                 key=lambda kv: str(kv[0]))]}
        for worker, metrics in sorted(collected.items())]


def activity(conn, body: dict) -> dict:
    """workers.get_activity_report: how many workers reported (`total`) and how many of them
    ran a task (`active`) in each interval."""
    range_ = Range.from_request(body, MIN_INTERVAL_S)
    seen: dict[int, set[str]] = defaultdict(set)
    busy: dict[int, set[str]] = defaultdict(set)
    for row in _rows(conn, None, range_.from_date, range_.to_date):
        bucket = range_.bucket(row.timestamp)
        seen[bucket].add(row.worker)
        if row.task:
            busy[bucket].add(row.worker)
    starts = range_.starts()
    return {name: {"dates": [b * 1000 for b in starts], "counts": [len(found.get(b, ())) for b in starts]}
            for name, found in (("total", seen), ("active", busy))}
