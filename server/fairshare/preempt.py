"""The preemption pass: guarantees kept waiting by borrowers get their GPUs back.

Every `preempt_interval_s` (server/app.py) while some quota guarantees GPUs and `preemption` is on:

    running      the leased tasks: their entity, GPUs, start, whether they may be preempted and
                 whether they were already asked to; the usage table's running counters are
                 corrected to them (a missed end never skews the order for long)
    claimants    entities below their guarantee with a task waiting in some queue, each with its
                 first waiting task (the one the fair pop hands out first), best ranked first
    decide       policy.choose_victims for each claimant against the GPUs free in the pool
    request      each victim's status_message becomes "preempting: for <user>'s task <id>" while
                 its status stays in_progress; its agent checkpoint-signals it, stops it and
                 hands it back with outcome `preempted` (server/services/leases.py requeues it
                 first in line)

Free GPUs are counted over the whole pool (gpu_capacity, or what live workers report); which
worker serves which queue is not modelled here.
"""
from __future__ import annotations

from sqlalchemy import select

from server.fairshare import policy
from server.fairshare import usage as fair
from server.storage import tables as t
from server.task_waits import WAITERS
from shipyard import clock
from shipyard.protocol import PREEMPT_REQUEST, TaskStatus

_CLAIMANTS_SCANNED = 2000   # queue entries read per pass, in queue order


def _running(ctx, conn, quotas) -> tuple[list[policy.Running], dict[str, dict]]:
    """The leased tasks as claims. A claim made before any quota existed has its GPUs estimated
    (fair.task_gpus; none on a worker that reports no GPU); one not started yet is not preempted
    (its agent's start would overwrite the request)."""
    workers = {w["id"]: fair.worker_gpus(w) for w in ctx.store.get_many(conn, t.workers)}
    docs = {}
    for doc in ctx.store.get_many(conn, t.tasks, [t.tasks.c.lease_expires.is_not(None)]):
        lease = doc.get("_lease") or {}
        if "gpus" not in lease:
            gpus = 0 if workers.get(lease.get("worker")) == 0 else fair.task_gpus(doc)
            doc["_lease"] = {**lease, "gpus": gpus, "since": _claimed(doc)}
        docs[doc["id"]] = doc
    claims = [policy.Running(task=d["id"], entity=fair.entity_of(d, quotas), gpus=int(d["_lease"]["gpus"]),
                             started=float(d["_lease"]["since"]),
                             preemptible=fair.preemptible(d) and d.get("status") == TaskStatus.IN_PROGRESS,
                             preempting=str(d.get("status_message") or "").startswith(PREEMPT_REQUEST))
              for d in docs.values()]
    return claims, docs


def _claimed(doc: dict) -> float:
    history = doc.get("shipyard_attempts") or [{}]
    claimed = history[-1].get("claimed")
    return clock.parse_iso(claimed) if claimed else clock.now()


def _counters(docs: dict[str, dict]) -> dict[str, tuple[int, float]]:
    counts: dict[str, tuple[int, float]] = {}
    for doc in docs.values():
        gpus, since = int(doc["_lease"]["gpus"]), float(doc["_lease"]["since"])
        for entity in fair.entities(doc):
            held, start = counts.get(entity, (0, 0.0))
            counts[entity] = (held + gpus, start + gpus * since)
    return counts


_D = t.tasks.c.doc
_WAITING = (select(t.queue_entries.c.task, _D["user"].as_string().label("user"),
                   _D["project"].as_string().label("project"), _D["status"].as_string().label("status"),
                   _D[("hyperparams", "Shipyard", "gpus", "value")].as_string().label("gpus"))
            .select_from(t.queue_entries.join(t.tasks, t.tasks.c.id == t.queue_entries.c.task))
            .order_by(t.queue_entries.c.position, t.queue_entries.c.seq).limit(_CLAIMANTS_SCANNED))


def _claimants(conn, quotas, held: dict[str, int]) -> list[tuple[str, dict]]:
    """(entity, its first waiting task as {id, user, gpus}) for each entity below its guarantee;
    entries the server put back in front first. Reads a few fields of each task, not documents."""
    first: dict[str, dict] = {}
    for row in conn.execute(_WAITING).all():
        entity = fair.entity_of({"user": row.user, "project": row.project}, quotas)
        if row.status != TaskStatus.QUEUED or entity in first:
            continue
        if held.get(entity, 0) < quotas.get(entity, policy.NO_QUOTA).gpus:
            first[entity] = {"id": row.task, "user": row.user, "gpus": fair.gpus_of(row.gpus)}
    return list(first.items())


def _request(ctx, conn, doc: dict, claimant: dict) -> None:
    who = claimant.get("user") or "another user"
    doc["status_message"] = f"{PREEMPT_REQUEST}: for {who}'s task {claimant['id']}"
    doc["_preempt"] = {"user": who, "task": claimant["id"], "at": clock.iso()}
    doc["last_update"] = clock.iso()
    ctx.store.save(conn, t.tasks, doc)


def run_pass(ctx) -> list[tuple[str, str]]:
    """One pass; returns (preempted task, claimant task) for each preemption requested."""
    book = fair.book(ctx)
    if book is None or not book.settings.preemption or book.known_empty():
        return []
    asked: list[tuple[str, str]] = []
    with ctx.store.tx() as conn:
        quotas = book.quotas(conn)
        if not any(q.gpus for q in quotas.values()):
            return []
        claims, docs = _running(ctx, conn, quotas)
        fair.set_running(conn, _counters(docs))
        held: dict[str, int] = {}
        for claim in claims:
            if not claim.preempting:
                held[claim.entity] = held.get(claim.entity, 0) + claim.gpus
        free = max(0, fair.capacity(ctx, conn, book.settings) - sum(c.gpus for c in claims))
        for entity, waiting in _claimants(conn, quotas, held):
            need = waiting["gpus"]
            victims = policy.choose_victims(entity, need, free, claims, quotas)
            free = max(0, free - need)   # what is free is spoken for by this claimant
            for victim in victims:
                _request(ctx, conn, ctx.store.get(conn, t.tasks, victim.task), waiting)
                asked.append((victim.task, waiting["id"]))
            chosen = {v.task for v in victims}
            claims = [policy.Running(**{**c.__dict__, "preempting": True}) if c.task in chosen else c
                      for c in claims]
    for victim_task, _claimant in asked:
        WAITERS.wake(victim_task)   # after the commit: the agent running it hears the request now
    return asked
