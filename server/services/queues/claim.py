"""queues.get_next_task: the claim, one or several entries popped and their tasks leased.

    get_next_task     the endpoint: `_claims` until there is a claim or the long-poll's deadline
    spread_wait       a long wait ends in its last tenth, at random (a herd of agents spreads out)
    _claims           one try: `_try_pop_many` on the handler pool, or nothing when the queues are known empty
    _Ask, _ask        what one call asks for beyond the queues (its fields, read once)
    _try_pop_many     up to `count` claims in one transaction, the queues in their priority order
    _claim_head       one queue's next entry popped (fair share when quotas are on), its task leased
    _popped_task      the popped task's document, or only its status when nothing more is needed
    _extras           task_info and the whole task document, when the claimer asked for them
    _count_claim      fair share: the claim's GPUs count as running for its user and project
    _answer           the reply: {"claims": [...]} with `count`, else the reference answer

The pop itself is entries.py; the lease's renewal and end are server/services/leases.py.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from server import errors
from server.fairshare import usage as fair
from server.rpc.registry import CallContext, Request, endpoint
from server.services.queues.entries import _TASK_STATUS, pop_if_head, require_queue
from server.services.tasks import doc as taskdoc
from server.storage import tables as t
from server.storage.store import retrying
from shipyard import clock
from shipyard.protocol import CLAIM_COUNT, CLAIMS, MAX_CLAIM_COUNT, TaskStatus


@dataclass(frozen=True)
class _Ask:
    """What one `queues.get_next_task` asks for beyond the queues (its fields, read once)."""

    get_info: bool = False
    lease_s: float | None = None
    worker: str = ""
    only_task: str | None = None
    gpus: int | None = None
    with_task: bool = False
    count: int = 1


def _try_pop_many(ctx: CallContext, queue_ids: list[str], ask: _Ask, empty: set[str] | None = None) -> list[dict]:
    """Up to `ask.count` claims in one transaction: the queues in their priority order, each
    drained before the next, every pop under the fair-share rules as the claims before it in
    this transaction left them (each leased claim counts as running at once). With nothing
    claimed, `empty` gets the queues the pops found without any entry (PostgreSQL)."""
    claims: list[dict] = []
    with ctx.store.tx() as conn:
        for queue_id in queue_ids if len(queue_ids) > 1 else ():
            require_queue(conn, queue_id)  # checked on every try: a queue deleted mid-wait is an error
        quotas = fair.quotas(ctx, conn)
        for queue_id in queue_ids:
            while len(claims) < ask.count:
                claim = _claim_head(ctx, conn, queue_id, quotas, ask)
                if claim is None:
                    break
                claims.append(claim)
        if not claims and len(queue_ids) == 1:  # nothing popped: only now can it be missing (entries go with it)
            require_queue(conn, queue_ids[0])
        if empty is not None:
            empty.clear()  # `retrying` may call this again: only the last try's answer counts
            if not claims:
                empty.update(conn.empty)
    return claims


def _claim_head(ctx: CallContext, conn, queue_id: str, quotas: dict, ask: _Ask) -> dict | None:
    """The queue's next entry popped, its task leased to the claimer; None when it has none."""
    while True:
        popped = pop_if_head(conn, queue_id, ask.only_task, ctx, quotas)
        if popped is None:
            return None
        task_id, added = popped[0], popped[1]
        status = popped[2] if len(popped) > 2 else _UNKNOWN
        doc = _popped_task(ctx, conn, task_id, bool(ask.lease_s or ask.get_info or ask.with_task), status)
        if doc is None:
            continue  # deleted while queued: skip the stale entry
        if doc.get("status") == TaskStatus.STOPPED:
            taskdoc.change_status(ctx, conn, doc, TaskStatus.QUEUED, force=True)
        result: dict = {"entry": {"task": task_id, "added": clock.iso(added)}, "queue": queue_id}
        if ask.lease_s:
            result["lease"] = taskdoc.grant_lease(doc, ask.worker, queue_id, ask.lease_s, taskdoc.max_attempts(ctx))
            if quotas:
                _count_claim(ctx, conn, doc, ask.worker, ask.gpus)
            ctx.store.save(conn, t.tasks, doc)
        return {**result, **_extras(ctx, doc, ask.get_info, ask.with_task)}


_UNKNOWN = object()  # the pop did not read the task's status


def _popped_task(ctx: CallContext, conn, task_id: str, whole: bool, status: Any = _UNKNOWN) -> dict | None:
    """The popped task's document (None: deleted while queued); when the claimer wants none of it
    and it needs no status change, only its status, from the column (no document parsed; read
    by the pop itself on PostgreSQL)."""
    if not whole:
        if status is _UNKNOWN:
            status = conn.execute(_TASK_STATUS, {"id": task_id}).scalar()
        if status != TaskStatus.STOPPED:
            return None if status is None else {"status": status}
    return ctx.store.get(conn, t.tasks, task_id)


def _extras(ctx: CallContext, doc: dict, get_info: bool, with_task: bool) -> dict:
    """What the claimer asked to get with the entry: `task_info` (ClearML's), and the task's whole
    document (`with_task`: the claimer needs it next; this saves it a tasks.get_by_id)."""
    extras: dict = {}
    if get_info:
        extras["task_info"] = {"company": doc.get("company"), "user": doc.get("user")}
    if with_task:
        extras["task"] = taskdoc.public_view(ctx, doc)
    return extras


def _count_claim(ctx: CallContext, conn, doc: dict, worker: str, gpus: int | None) -> None:
    """Fair share is on: the claim's GPUs (as the claimer said, else estimated) count as running
    for its user and project."""
    if gpus is None:
        gpus = 0 if fair.worker_gpus(ctx.store.get(conn, t.workers, worker)) == 0 else fair.task_gpus(doc)
    fair.claim_started(conn, doc, gpus, clock.now())


@endpoint("queues.get_next_task")
async def get_next_task(ctx: CallContext, req: Request) -> dict:
    """Pop the head of the queue. Shipyard extensions: `queues` (several, in priority order),
    `wait_s` (long-poll: wait up to that many seconds for an entry; one of 10 s or more that
    nothing answers ends in its last tenth, at random: `spread_wait`), `lease_s` (the claim is
    a lease the caller renews; see server/services/leases.py) and `with_task` (the popped task's
    document, as tasks.get_by_id gives it, in `task`). With `task`, the head is taken
    only when it is that task. `gpus`: how many GPUs the claimer gives the task (fair share
    counts them; else the task's `Shipyard/gpus` parameter, else 1). `count` (CLAIM_COUNT): up to
    that many entries in one transaction, answered as {"claims": [...]}, as soon as one is there."""
    queue_ids = req.str_list("queues") or [req.id("queue", "queue")]
    wait_s = min(max(0.0, req.number("wait_s", 0.0) or 0.0), ctx.settings.long_poll_max_s
                 if ctx.settings else 60.0)
    ask = _ask(ctx, req)
    deadline = time.monotonic() + spread_wait(wait_s, random.random())
    while True:
        mark = ctx.notifier.mark(queue_ids) if ctx.notifier is not None else 0
        claims = await _claims(ctx, queue_ids, ask)
        if claims:
            return _answer(req, claims)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.notifier is None or ctx.notifier.closed:
            return _answer(req, [])
        woken = await ctx.notifier.wait(queue_ids, remaining, since=mark)
        if not woken and ctx.notifier.listening and time.monotonic() >= deadline:
            # The wait ran out with no notification since the pop began (PostgreSQL: an
            # enqueue's NOTIFY reaches every listening replica at its commit, a reconnect wakes
            # every waiter): nothing came, and no second pop is needed to prove it. It was one
            # of the two transactions each idle long-poll cost.
            return _answer(req, [])
        if ctx.notifier.closed:
            return _answer(req, [])  # the server is stopping: the caller may be gone too, so pop nothing for it
        gone = ctx.is_disconnected
        if gone is not None and await gone():
            return _answer(req, [])  # the caller left: don't pop a task nobody will receive


async def _claims(ctx: CallContext, queue_ids: list[str], ask: _Ask) -> list[dict]:
    """One try: the claims popped, or none without asking the database when every queue is known
    empty (server/notify.py: found empty by an earlier pop, nothing enqueued to it since)."""
    settings, notifier = ctx.settings, ctx.notifier
    if settings is None:  # a store used without a server (tests, tools)
        return retrying(_try_pop_many, ctx, queue_ids, ask)
    # on the handler pool: without waiting on the database lock on the event loop
    if notifier is None:
        return await settings.run_db(retrying, _try_pop_many, ctx, queue_ids, ask)
    if notifier.known_empty(queue_ids):
        notifier.skipped_pops += 1
        return []
    counts, empty = notifier.counts(queue_ids), set[str]()
    claims = await settings.run_db(retrying, _try_pop_many, ctx, queue_ids, ask, empty)
    if not claims and empty:
        notifier.found_empty(queue_ids, counts, empty)
    return claims


# A long-poll of JITTER_FROM_S or more that nothing answers ends at a random moment in the last
# JITTER_SHARE of its wait: agents that all began together (a server restart, a fleet started at
# once) would otherwise all come back in the same instant every wait, for as long as they run.
JITTER_FROM_S = 10.0
JITTER_SHARE = 0.1


def spread_wait(wait_s: float, draw: float) -> float:
    """How long a long-poll asking `wait_s` waits at most; `draw` in [0, 1) (random.random())."""
    return wait_s if wait_s < JITTER_FROM_S else wait_s * (1.0 - JITTER_SHARE * draw)


def _ask(ctx: CallContext, req: Request) -> _Ask:
    lease_s = req.number("lease_s")
    worker = req.text("worker") or ctx.worker
    gpus = req.integer("gpus")
    count = req.integer(CLAIM_COUNT)
    if gpus is not None and gpus < 0:
        raise errors.validation(f"field 'gpus' must be 0 or more, got {gpus}")
    if lease_s is not None and (lease_s <= 0 or not worker):
        raise errors.validation("lease_s must be > 0 and the worker named (field 'worker' or X-ClearML-Worker)")
    if count is not None and not 1 <= count <= MAX_CLAIM_COUNT:
        raise errors.validation(f"field '{CLAIM_COUNT}' must be 1 to {MAX_CLAIM_COUNT}, got {count}")
    return _Ask(req.flag("get_task_info"), lease_s, worker, req.text("task"), gpus, req.flag("with_task"),
                count or 1)


def _answer(req: Request, claims: list[dict]) -> dict:
    """With `count`: {"claims": [...]}; without, the reference answer: the one claim ({} for none),
    its `queue` only when the caller named several (`queues`)."""
    if req.body.get(CLAIM_COUNT) is not None:
        return {CLAIMS: claims}
    if not claims:
        return {}
    result = claims[0]
    if not req.str_list("queues"):
        result.pop("queue", None)
    return result
