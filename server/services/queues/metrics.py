"""Queue length and average wait over time, for queues.get_queue_metrics.

A sample (queue, time, length, average wait of the entries) is written after a queue's entries
change (server/services/queues/entries.py and crud.py call `sample`): in a running server by its
sampling pass (`Later`: every SAMPLE_EVERY_S, all the queues changed since, in one transaction,
and once more a pass later, so a change committed while a pass ran is still drawn), or at once,
just before the changing transaction commits, where no pass runs (a store used by a tool or a
test). A read samples this process's changed queues first. Changes within one second keep that
second's last state in one row, or two while concurrent transactions write it: in a running
server a state that lasts two seconds has a second of its own, a shorter one may not. A queue
that nobody touches is sampled on a read when its last sample is older than REFRESH_S, so it
still draws a line. Samples older than RETENTION_S are pruned as new ones arrive.

Why a pass: a sample counts and averages the queue's entries (O(entries), over an index that
pops churn). Inside every enqueue and pop it was the largest part of PostgreSQL's time in a pair
(bench/bench_server.py), and with 2,000 entries a queue (bench/bench_scale.py) each pop read
them all.

Reading follows the reference server: the range starts LOOKBACK_S earlier (a quiet queue has few
points), samples fall into fixed intervals aligned to the epoch, an interval answers the sample
with the longest wait in it, empty intervals are left out, and `dates` are epoch milliseconds.
Without `queue_ids` the answer is one series, `total`: the lengths summed and the waits averaged
weighted by length, each queue's last value carried into intervals where it has none.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from functools import partial
from typing import Any

from sqlalchemy import Float, bindparam, case, delete, exists, func, insert, select, update

from server.services.workers.stats import Range
from server.storage import tables as t
from server.storage.prepared import Prepared
from shipyard import clock

RETENTION_S = 7 * 24 * 3600
REFRESH_S = 300
LOOKBACK_S = 3600
PRUNE_EVERY_S = 60.0
SAMPLE_EVERY_S = 1.0  # the sampling pass's period (a running server's)
SETTLE_S = 1.0  # a queue changed this recently is sampled again by the next pass
_M = t.queue_metrics
_E = t.queue_entries
_last_prune: dict[str, float] = {}  # queue id -> when its old samples were last pruned


# Prepared: a sample is taken on every enqueue and pop (see server/storage/prepared.py)
# The queue's state, computed by the database inside the statement that writes it (one statement
# a sample, not a read and a write): its length, and the entries' average wait (0 when empty).
_NOW = bindparam("ts", type_=Float)
_LENGTH = select(func.count()).where(_E.c.queue == bindparam("q")).scalar_subquery()
_WAIT = select(case((func.count() == 0, 0.0), (func.avg(_E.c.added) > _NOW, 0.0),
                    else_=_NOW - func.avg(_E.c.added))).where(_E.c.queue == bindparam("q")).scalar_subquery()
# This second's row, unless another transaction holds it (PostgreSQL: SKIP LOCKED). Pops of one
# queue on two replicas would otherwise queue up behind each other here until each commits.
_THIS_SECOND = (select(_M.c.seq).where(_M.c.queue == bindparam("q")).where(_M.c.timestamp >= bindparam("second"))
                .limit(1).with_for_update(skip_locked=True).scalar_subquery())
_SAME_SECOND = Prepared(update(_M).where(_M.c.seq == _THIS_SECOND)
                        .values(timestamp=_NOW, length=_LENGTH, avg_wait=_WAIT))
_INSERT = Prepared(_M.insert().from_select(["queue", "timestamp", "length", "avg_wait"],
                                           select(bindparam("q", type_=_M.c.queue.type), _NOW, _LENGTH, _WAIT)))
# PostgreSQL: both in one statement (this second's row updated, else a row inserted), so a
# pipelined transaction sends it on without waiting for the UPDATE's rowcount. The INSERT's
# subqueries run only when it inserts (they are init plans of a row the WHERE may drop).
_THIS_SECOND_UPDATED = (update(_M).where(_M.c.seq == _THIS_SECOND)
                        .values(timestamp=_NOW, length=_LENGTH, avg_wait=_WAIT).returning(_M.c.seq).cte("updated"))
_UPSERT = Prepared(insert(_M).from_select(
    ["queue", "timestamp", "length", "avg_wait"],
    select(bindparam("q", type_=_M.c.queue.type), _NOW, _LENGTH, _WAIT)
    .where(~exists(select(_THIS_SECOND_UPDATED.c.seq)))).add_cte(_THIS_SECOND_UPDATED))
_PRUNE = Prepared(delete(_M).where(_M.c.queue == bindparam("q")).where(_M.c.timestamp < bindparam("before")))


class Later:
    """The queues of one store whose entries changed and that its sampling pass has yet to
    sample (thread-safe: marked as transactions commit, taken by the pass and by reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict[str, float] = {}  # queue id -> when its entries last changed

    def mark(self, queue_id: str) -> None:
        with self._lock:
            self._marks[queue_id] = clock.monotonic()

    def take(self, queue_ids: list[str] | None = None) -> list[str]:
        """The marked queues (of `queue_ids`, or all), to be sampled now; those changed within
        SETTLE_S stay marked (a transaction that marked one may not have committed yet)."""
        now = clock.monotonic()
        with self._lock:
            marked = sorted(self._marks if queue_ids is None else (q for q in queue_ids if q in self._marks))
            for queue_id in marked:
                if now - self._marks[queue_id] >= SETTLE_S:
                    del self._marks[queue_id]
        return marked


_later: dict[Any, Later] = {}  # engine -> its queues to sample (a running server's store: `sample_later`)


def sample_later(store: Any) -> Later:
    """From now on, changes in `store` are sampled by its pass (`run_pass`), not in their
    transactions; the caller runs that pass every SAMPLE_EVERY_S and `stop_sampling_later` at the end."""
    return _later.setdefault(store.engine, Later())


def stop_sampling_later(store: Any) -> None:
    """Sample what is left, and go back to sampling in each transaction."""
    later = _later.pop(store.engine, None)
    if later is not None:
        _sample_all(store, later.take())


def run_pass(store: Any) -> int:
    """The sampling pass: every queue changed since the last one, in one transaction; how many."""
    later = _later.get(store.engine)
    queue_ids = later.take() if later is not None else []
    _sample_all(store, queue_ids)
    return len(queue_ids)


def _sample_all(store: Any, queue_ids: list[str]) -> None:
    if queue_ids:
        with store.tx() as conn:
            for queue_id in queue_ids:  # sorted by Later.take: one lock order in every pass
                sample_now(conn, queue_id)


def _later_of(conn) -> Later | None:
    sa = getattr(conn, "sa", None)
    return _later.get(sa.engine) if sa is not None and _later else None


def sample(conn, queue_id: str) -> None:
    """Record the queue's length and average wait as the transaction commits them: once per
    queue and transaction (with group commit, once per group), however many of its entries the
    transaction changed: marked for the sampling pass as it commits, or, where none runs, taken
    just before the COMMIT (`Tx.before_commit`)."""
    before_commit = getattr(conn, "before_commit", None)
    if before_commit is None:
        sample_now(conn, queue_id)
        return
    later = _later_of(conn)
    before_commit(("queue_metrics", queue_id),
                  partial(_mark, later, queue_id) if later is not None else partial(_sample_into, queue_id))


def _mark(later: Later, queue_id: str, _conn) -> None:
    later.mark(queue_id)


def _sample_into(queue_id: str, conn) -> None:
    sample_now(conn, queue_id)


def sample_now(conn, queue_id: str) -> None:
    """Record the queue's current length and average wait: one row per queue and second (the
    second's last state), so a busy queue stores about 86,400 rows a day; a second row in the
    same second only while another transaction is writing the first (concurrent pops on
    PostgreSQL), where waiting for it would serialise every pop of the queue."""
    now = clock.now()
    values = {"q": queue_id, "ts": now, "second": float(int(now))}
    if conn.dialect.name == "postgresql":
        conn.execute(_UPSERT, values)
    elif not conn.execute(_SAME_SECOND, values).rowcount:
        conn.execute(_INSERT, values)
    if now - _last_prune.get(queue_id, 0.0) >= PRUNE_EVERY_S:
        _last_prune[queue_id] = now
        conn.execute(_PRUNE, {"q": queue_id, "before": now - RETENTION_S})


def refresh(conn, queue_ids: list[str], *, stale_only: bool) -> None:
    last = dict(conn.execute(select(_M.c.queue, func.max(_M.c.timestamp)).where(_M.c.queue.in_(queue_ids))
                             .group_by(_M.c.queue)).all())
    for queue_id in queue_ids:
        if not stale_only or clock.now() - last.get(queue_id, 0.0) >= REFRESH_S:
            sample_now(conn, queue_id)  # read back right after


def _per_bucket(conn, range_: Range, queue_ids: list[str]) -> dict[int, dict[str, tuple[float, int]]]:
    """{bucket: {queue: (wait, length)}}: the sample with the longest wait in each interval."""
    rows = conn.execute(select(_M.c.queue, _M.c.timestamp, _M.c.length, _M.c.avg_wait)
                        .where(_M.c.queue.in_(queue_ids))
                        .where(_M.c.timestamp >= range_.from_date - LOOKBACK_S)
                        .where(_M.c.timestamp <= range_.to_date)).all()
    out: dict[int, dict[str, tuple[float, int]]] = defaultdict(dict)
    for row in rows:
        bucket = out[range_.bucket(row.timestamp)]
        bucket[row.queue] = max(bucket.get(row.queue, (-1.0, 0)), (row.avg_wait, row.length))
    return dict(sorted(out.items()))


def _series(queue: str, points: list[tuple[int, float, int]]) -> dict:
    return {"queue": queue, "dates": [b * 1000 for b, _, _ in points],
            "avg_waiting_times": [w for _, w, _ in points], "queue_lengths": [n for _, _, n in points]}


def _per_queue(buckets: dict[int, dict[str, tuple[float, int]]], queue_ids: list[str]) -> list[dict]:
    points: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
    for bucket, queues in buckets.items():
        for queue, (wait, length) in queues.items():
            points[queue].append((bucket, wait, length))
    return [_series(queue, points[queue]) for queue in queue_ids if points.get(queue)]


def _total(buckets: dict[int, dict[str, tuple[float, int]]]) -> list[dict]:
    last: dict[str, tuple[float, int]] = {}
    points = []
    for bucket, queues in buckets.items():
        last.update(queues)
        length = sum(n for _, n in last.values())
        wait = sum(w * n for w, n in last.values()) / length if length else 0.0
        points.append((bucket, wait, length))
    return [_series("total", points)] if points else []


def metrics(conn, body: dict[str, Any], all_queue_ids: list[str]) -> list[dict]:
    range_ = Range.from_request(body, 1)
    wanted = body.get("queue_ids") or []
    queue_ids = [q for q in wanted if q in set(all_queue_ids)] if wanted else all_queue_ids
    later = _later_of(conn)
    for queue_id in later.take(queue_ids) if later is not None else ():
        sample_now(conn, queue_id)  # changed since this process's last pass
    refresh(conn, queue_ids, stale_only=not body.get("refresh"))
    buckets = _per_bucket(conn, range_, queue_ids)
    return _per_queue(buckets, queue_ids) if wanted else _total(buckets)
