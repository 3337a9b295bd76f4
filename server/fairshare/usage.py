"""Fair share against the database: settings, quotas, usage counters and the fair pop.

    FairSettings    the server settings of fair share (server/config.py owns the keys)
    QuotaBook       the quotas in force: the `quotas` setting overridden by the API's entries
                    (table fair_quotas), cached in the process and dropped when the API edits them
    book/quotas     the CallContext's book, and its quotas (empty: fair share is off, queues FIFO)
    entity_of       the entity a task counts against: its project's when that has a quota, else
                    its user's
    task_gpus       the GPUs a task's claim holds: its `Shipyard/gpus` parameter, else 1 (0 on a
                    worker whose reports list no GPU)
    preemptible     not tagged `shipyard:non-preemptible` (system tag or tag)
    claim_started   a claim starts: counted in its user's and project's running GPUs; the lease
                    remembers its GPUs and start
    claim_ended     the claim ends: its GPU-seconds join the decayed usage (one row per entity)
    standings       the Standing of each entity (policy.Standing) from the counters
    pop_fair        a queue's next entry in fair-share order (policy.pick over the first WINDOW
                    entries); None when none may run now
    capacity        GPUs in the pool: the gpu_capacity setting, else what live workers report

Usage is only counted while some quota exists: with none the pop path is the plain FIFO pop.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy import bindparam, delete, select, update

from server.fairshare import policy
from server.fairshare.policy import Quota, Standing, Usage
from server.storage import tables as t
from server.storage.prepared import Prepared
from shipyard import clock
from shipyard.protocol import SystemTag

WINDOW = 64   # queue entries the fair pop looks at (the rest wait their turn behind them)
_E, _T, _U, _Q = t.queue_entries, t.tasks, t.fair_usage, t.fair_quotas
_D = _T.c.doc
# The pop path's statements, prepared once (server/storage/prepared.py). The window reads the few
# fields of each task's document it needs (JSON paths), never whole documents.
_WINDOW = Prepared(
    select(_E.c.seq, _E.c.task, _E.c.added, _E.c.position, _T.c.id.label("found"),
           _D["user"].as_string().label("user"), _D["project"].as_string().label("project"),
           _D["system_tags"].as_json().label("system_tags"), _D["tags"].as_json().label("tags"),
           _D[("hyperparams", "Shipyard", "gpus", "value")].as_string().label("gpus"))
    .select_from(_E.outerjoin(_T, _T.c.id == _E.c.task)).where(_E.c.queue == bindparam("q"))
    .order_by(_E.c.position, _E.c.seq).limit(WINDOW))
_USAGE = Prepared(select(_U.c.gpu_seconds, _U.c.as_of, _U.c.running_gpus, _U.c.running_start)
                  .where(_U.c.entity == bindparam("e")))
_START = Prepared(update(_U).where(_U.c.entity == bindparam("e"))
                  .values(running_gpus=_U.c.running_gpus + bindparam("g"),
                          running_start=_U.c.running_start + bindparam("gs")))
_UPDATE = Prepared(update(_U).where(_U.c.entity == bindparam("e"))
                   .values(gpu_seconds=bindparam("gpu_seconds"), as_of=bindparam("as_of"),
                           running_gpus=bindparam("running_gpus"), running_start=bindparam("running_start")))
_INSERT = Prepared(_U.insert().values(entity=bindparam("e"), gpu_seconds=bindparam("gpu_seconds"),
                                      as_of=bindparam("as_of"), running_gpus=bindparam("running_gpus"),
                                      running_start=bindparam("running_start")))
_QUOTAS = Prepared(select(_Q.c.entity, _Q.c.gpus, _Q.c.borrow))
_TAKE = Prepared(delete(_E).where(_E.c.seq == bindparam("seq")))


@dataclass(frozen=True)
class FairSettings:
    quotas: dict[str, Quota] = field(default_factory=dict)   # from the `quotas` setting
    half_life_s: float = 168 * 3600.0
    default_share: float = 1.0
    preemption: bool = True
    interval_s: float = 2.0
    gpu_capacity: int = 0


class QuotaBook:
    """The quotas in force, read from the table at most every TTL_S (and at once after an edit
    through this server's API)."""

    TTL_S = 5.0

    def __init__(self, settings: FairSettings | None = None):
        self.settings = settings or FairSettings()
        self._stored: dict[str, Quota] | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()

    def quotas(self, conn) -> dict[str, Quota]:
        with self._lock:
            if self._stored is None or clock.monotonic() - self._read_at > self.TTL_S:
                rows = conn.execute(_QUOTAS).all()
                self._stored = {r.entity: Quota(int(r.gpus), bool(r.borrow)) for r in rows}
                self._read_at = clock.monotonic()
            return {**self.settings.quotas, **self._stored}

    def known_empty(self) -> bool:
        """The quota list read last is still fresh and guarantees no GPU: nothing to preempt for,
        and no transaction needed to find that out (the default server, with no quota set)."""
        with self._lock:
            if self._stored is None or clock.monotonic() - self._read_at > self.TTL_S:
                return False
            return not any(q.gpus for q in {**self.settings.quotas, **self._stored}.values())

    def stored(self, conn) -> dict[str, Quota]:
        self.quotas(conn)
        return dict(self._stored or {})

    def invalidate(self) -> None:
        with self._lock:
            self._stored = None


def book(ctx) -> QuotaBook | None:
    return getattr(ctx.settings, "fair", None)


def quotas(ctx, conn) -> dict[str, Quota]:
    found = book(ctx)
    return found.quotas(conn) if found else {}


def half_life(ctx) -> float:
    found = book(ctx)
    return found.settings.half_life_s if found else FairSettings().half_life_s


def entities(doc: dict) -> list[str]:
    out = [f"user:{doc.get('user') or ''}"]
    if doc.get("project"):
        out.append(f"project:{doc['project']}")
    return out


def entity_of(doc: dict, quotas: dict[str, Quota]) -> str:
    project = f"project:{doc['project']}" if doc.get("project") else None
    return project if project in quotas else f"user:{doc.get('user') or ''}"


def task_gpus(doc: dict) -> int:
    item = ((doc.get("hyperparams") or {}).get("Shipyard") or {}).get("gpus") or {}
    return gpus_of(item.get("value") if isinstance(item, dict) else item)


def gpus_of(value) -> int:
    """A `Shipyard/gpus` parameter's value as a GPU count (1 when unset or not a number)."""
    try:
        return max(0, int(str(value).strip())) if value not in (None, "") else 1
    except ValueError:
        return 1


def preemptible(doc: dict) -> bool:
    return _preemptible(doc.get("system_tags"), doc.get("tags"))


def _preemptible(*tag_lists) -> bool:
    return not any(isinstance(tags, list) and SystemTag.NON_PREEMPTIBLE in tags for tags in tag_lists)


def _usage(conn, entity: str) -> Usage | None:
    row = conn.execute(_USAGE, {"e": entity}).first()
    return Usage(row.gpu_seconds, row.as_of, row.running_gpus, row.running_start) if row else None


def _put(conn, entity: str, usage: Usage, existed: bool) -> None:
    values = {"e": entity, "gpu_seconds": usage.gpu_seconds, "as_of": usage.as_of,
              "running_gpus": usage.running_gpus, "running_start": usage.running_start}
    conn.execute(_UPDATE if existed else _INSERT, values)


def claim_started(conn, doc: dict, gpus: int, now: float) -> None:
    doc["_lease"] = {**doc["_lease"], "gpus": gpus, "since": now}
    for entity in entities(doc):
        if not conn.execute(_START, {"e": entity, "g": gpus, "gs": gpus * now}).rowcount:
            _put(conn, entity, policy.started(Usage(as_of=now), gpus, now), existed=False)


def claim_ended(conn, doc: dict, half_life_s: float) -> None:
    lease = doc.get("_lease") or {}
    if "gpus" not in lease:
        return   # claimed while fair share was off
    now = clock.now()
    for entity in entities(doc):
        before = _usage(conn, entity)
        after = policy.ended(before or Usage(as_of=now), int(lease["gpus"]), float(lease["since"]), now, half_life_s)
        _put(conn, entity, after, before is not None)


def set_running(conn, counts: dict[str, tuple[int, float]]) -> None:
    """Correct the running counters to what the leases say ({entity: (gpus, sum of gpus*start)})."""
    rows = conn.execute(select(_U.c.entity, _U.c.running_gpus, _U.c.running_start)).all()
    known = {r.entity: (r.running_gpus, r.running_start) for r in rows}
    for entity in set(known) | set(counts):
        want = counts.get(entity, (0, 0.0))
        if known.get(entity) == want:
            continue
        if entity in known:
            conn.execute(update(_U).where(_U.c.entity == entity)
                         .values(running_gpus=want[0], running_start=want[1]))
        else:
            conn.execute(_U.insert().values(entity=entity, gpu_seconds=0.0, as_of=clock.now(),
                                            running_gpus=want[0], running_start=want[1]))


def standings(conn, wanted: set[str], quotas: dict[str, Quota], settings: FairSettings,
              now: float) -> dict[str, Standing]:
    """One keyed read per entity (a handful compete in a queue window)."""
    out = {}
    for entity in wanted:
        quota = quotas.get(entity, policy.NO_QUOTA)
        usage = _usage(conn, entity) or Usage()
        out[entity] = Standing(guarantee=quota.gpus, running=usage.running_gpus,
                               usage=policy.usage_now(usage, now, settings.half_life_s),
                               share=float(quota.gpus) if quota.gpus > 0 else settings.default_share)
    return out


def as_entry(row, quotas: dict[str, Quota]) -> policy.Entry:
    if row.found is None:   # deleted while queued: handed out (and skipped by the pop) as it comes
        return policy.Entry(row.task, "", 0, pinned=True)
    entity = entity_of({"user": row.user, "project": row.project}, quotas)
    return policy.Entry(row.task, entity, gpus_of(row.gpus), pinned=row.position < 0,
                        preemptible=_preemptible(row.system_tags, row.tags))


def pop_fair(ctx, conn, queue_id: str, quotas: dict[str, Quota]) -> tuple[str, float] | None:
    settings = book(ctx).settings  # type: ignore[union-attr]  # callers hold a book
    for _ in range(10):   # an entry taken by a concurrent pop (PostgreSQL): look again
        rows = conn.execute(_WINDOW, {"q": queue_id}).all()
        entries = [as_entry(row, quotas) for row in rows]
        known = {e.entity for e in entries if e.entity}
        index = policy.pick(entries, standings(conn, known, quotas, settings, clock.now()), quotas)
        if index is None:
            return None
        row = rows[index]
        if conn.execute(_TAKE, {"seq": row.seq}).rowcount:
            return row.task, row.added
    return None


def capacity(ctx, conn, settings: FairSettings) -> int:
    if settings.gpu_capacity:
        return settings.gpu_capacity
    from server.services.workers import crud as workers

    return sum(worker_gpus(w) or 0 for w in workers.live_workers(ctx, conn))


def worker_gpus(worker: dict | None) -> int | None:
    """GPUs a worker's last report lists (None: no report yet)."""
    stats = (worker or {}).get("machine_stats")
    if stats is None:
        return None
    return len(stats.get("gpu_memory_free") or stats.get("gpu_usage") or [])
