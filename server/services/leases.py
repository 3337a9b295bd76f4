"""Claims as leases (a Shipyard extension; clients of the reference server never see it).

A `queues.get_next_task` that asks for `lease_s` records, in the same transaction as the pop,
which worker holds the task, until when, and the attempt number - the fencing token. The
holder renews with `tasks.renew_lease`; status changes and log events that carry a stale
`attempt` are refused. When a lease expires (agent died, machine reclaimed, network cut) the
reaper puts the task back at the front of its queue with its attempt counter raised, up to
`max_attempts`, then fails it with the reason. Tasks tagged `shipyard:no-retry` are failed at
once instead of being retried. A release with outcome `preempted` (the agent gave borrowed GPUs
back, server/fairshare/preempt.py asked it to) puts the task first in its queue without counting
the run, and counts the preemption in its runtime (`runtime.preemptions`).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from server import errors, replicas
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events.store import add_server_line
from server.services.queues import crud as q
from server.services.tasks import doc as taskdoc
from server.storage import tables as t
from shipyard import clock
from shipyard.protocol import MAX_RENEWALS, RENEW_LEASES, LeaseOutcome, OutcomeKind, Subcode, SystemTag, TaskStatus

_EXPIRED = select(t.tasks.c.id).where(t.tasks.c.lease_expires < bindparam("now"))


def stale(task_id: str, attempt: Any, current: Any) -> errors.APIError:
    return errors.APIError(400, Subcode.STALE_CLAIM, f"Stale claim: attempt {attempt} of task {task_id} was "
                           f"superseded by attempt {current}; this agent no longer owns the task")


def check_fence(doc: dict, attempt: Any) -> None:
    """Refuse a write from an attempt that no longer owns the task (None = unfenced client)."""
    if attempt is None:
        return
    if doc.get("_attempt") != attempt:
        raise stale(doc["id"], attempt, doc.get("_attempt"))


def check_held(doc: dict, attempt: Any) -> None:
    """check_fence, and the claim must still hold its lease (renewal, release, start_run, and an
    agent's edit of the task it runs: `tasks.edit`, `tasks.set_requirements` with `attempt`).
    The attempt only grows at the next claim, so without this a write made after the claim was
    handed back, reaped or ended would pass the fence and overwrite what was written since."""
    check_fence(doc, attempt)
    if attempt is not None and not doc.get("_lease"):
        raise stale(doc["id"], attempt, "none (the task is no longer leased)")


def check_claim(doc: dict, attempt: Any, new_status: str) -> None:
    """A status change's fence: check_held while the task waits in its queue (handed back or
    reaped; the attempt only grows at its next claim) and for a start, else check_fence. A late
    `tasks.started` or `tasks.stopped` from the old holder would otherwise run or end a task that
    is queued for someone else."""
    if doc.get("status") == TaskStatus.QUEUED or new_status == TaskStatus.IN_PROGRESS:
        check_held(doc, attempt)
    else:
        check_fence(doc, attempt)


grant = taskdoc.grant_lease
close_attempt = taskdoc.close_attempt


def requeue_or_fail(ctx: CallContext, conn, doc: dict, reason: str) -> LeaseOutcome:
    """Give a task whose holder is gone back to its queue (front), or fail it for good."""
    queue_id = (doc.get("_lease") or {}).get("queue") or (doc.get("execution") or {}).get("queue")
    attempts = taskdoc.runs_so_far(doc)
    close_attempt(doc, f"{OutcomeKind.INFRASTRUCTURE}: {reason}", ctx, conn)
    no_retry = any(SystemTag.NO_RETRY in (doc.get(field) or []) for field in ("system_tags", "tags"))
    if no_retry or attempts >= taskdoc.max_attempts(ctx) or not queue_id:
        why = (f"agent lost {attempts} time(s); last: {reason}" if not no_retry
               else f"{reason} (task opted out of retries)")
        _end_by_server(ctx, conn, doc, TaskStatus.FAILED, f"{OutcomeKind.INFRASTRUCTURE}: {why}")
        return LeaseOutcome.FAILED
    q.remove_task_entries(conn, doc["id"])
    taskdoc.change_status(ctx, conn, doc, TaskStatus.QUEUED, force=True,
                          reason=f"{OutcomeKind.INFRASTRUCTURE}: {reason}; "
                                 f"re-queued for run {attempts + 1} of {taskdoc.max_attempts(ctx)}",
                          message="re-queued by the server")
    q.add_entry(conn, queue_id, doc["id"], front=True)
    if ctx.notifier:
        ctx.notifier.notify(queue_id)
    return LeaseOutcome.REQUEUED


def _queue_of(doc: dict) -> str | None:
    return (doc.get("_lease") or {}).get("queue") or (doc.get("execution") or {}).get("queue")


def _preempted(req: Request, reason: str) -> bool:
    return req.text("outcome") == OutcomeKind.PREEMPTED or reason.startswith(f"{OutcomeKind.PREEMPTED}:")


def requeue_preempted(ctx: CallContext, conn, doc: dict, reason: str) -> LeaseOutcome:
    """The agent stopped the task to give borrowed GPUs back: first in its queue again, the run not
    counted as a failed attempt, and the preemption counted in its runtime."""
    queue_id = str(_queue_of(doc))  # the caller checked there is one
    asked = doc.pop("_preempt", None) or {}
    close_attempt(doc, reason if reason.startswith(f"{OutcomeKind.PREEMPTED}:")
                  else f"{OutcomeKind.PREEMPTED}: {reason}", ctx, conn)
    doc["_run"] = max(0, taskdoc.runs_so_far(doc) - 1)
    runtime = dict(doc.get("runtime") or {})
    runtime["preemptions"] = int(runtime.get("preemptions") or 0) + 1
    doc["runtime"] = runtime
    q.remove_task_entries(conn, doc["id"])
    who = asked.get("user") or "another user"
    taskdoc.change_status(ctx, conn, doc, TaskStatus.QUEUED, force=True,
                          reason=f"{OutcomeKind.PREEMPTED}: its GPUs went back to {who}'s guarantee "
                                 f"(task {asked.get('task') or '?'})",
                          message=f"preempted by {who}'s task")
    q.add_entry(conn, queue_id, doc["id"], front=True)
    if ctx.notifier:
        ctx.notifier.notify(queue_id)
    return LeaseOutcome.REQUEUED


def finish_from_exit(ctx: CallContext, conn, doc: dict, worker: str) -> LeaseOutcome:
    """The task's process had already exited when its agent was lost: end the task as that
    exit says instead of running it again."""
    code = int(doc["_exit"]["code"])
    new = TaskStatus.COMPLETED if code == 0 else TaskStatus.FAILED
    reason = ("worker execution done" if code == 0
              else f"{OutcomeKind.USER_ERROR}: the task process exited with code {code}")
    _end_by_server(ctx, conn, doc, new, f"{reason} (agent {worker} was lost before it reported; the end "
                                        "of the console log may be missing)")
    return LeaseOutcome.COMPLETED if code == 0 else LeaseOutcome.FAILED


def _end_by_server(ctx: CallContext, conn, doc: dict, new: TaskStatus, reason: str) -> None:
    """End a task whose agent is gone: its status, and the reason as its console's last line."""
    taskdoc.change_status(ctx, conn, doc, new, force=True, reason=reason, message=f"{new} by the server",
                          extra={"completed": clock.iso()})
    add_server_line(conn, doc["id"], f"shipyard server: task {doc['id']} ended {new}: {reason}",
                    int(clock.now() * 1000), level="info" if new == TaskStatus.COMPLETED else "error")


def reap_expired(ctx: CallContext) -> list[tuple[str, LeaseOutcome]]:
    """One pass of the reaper: every task whose lease expired is re-queued or failed - or,
    when its process had already exited (tasks.record_exit), ended as it ended."""
    done: list[tuple[str, LeaseOutcome]] = []
    with ctx.store.tx() as conn:
        if not replicas.reaper_fence(conn):
            return done  # another replica's reaper is in a pass right now
        for (task_id,) in conn.execute(_EXPIRED, {"now": clock.now()}).all():
            doc = ctx.store.get(conn, t.tasks, task_id)
            lease = (doc or {}).get("_lease")
            if doc is None or not lease:
                continue
            if (doc.get("_exit") or {}).get("attempt") == doc.get("_attempt"):
                done.append((task_id, finish_from_exit(ctx, conn, doc, lease["worker"])))
                continue
            what = requeue_or_fail(ctx, conn, doc, f"lease of worker {lease['worker']} expired")
            done.append((task_id, what))
    return done


@endpoint("tasks.record_exit")
def record_exit(ctx: CallContext, req: Request) -> dict:
    """The holder saw the task's process exit: noted at once, before logs are flushed and the
    status reported, so an agent lost in between does not make the task run a second time."""
    task_id, attempt = req.id("task", "task"), req.integer("attempt", required=True)
    code = req.integer("exit_code", required=True)
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        check_fence(doc, attempt)
        doc["_exit"] = {"attempt": attempt, "code": code, "at": clock.iso()}
        ctx.store.save(conn, t.tasks, doc)
    return {"recorded": True}


@endpoint("tasks.renew_lease")
def renew(ctx: CallContext, req: Request) -> dict:
    task_id, attempt = req.id("task", "task"), req.integer("attempt", required=True)
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        check_held(doc, attempt)
        lease = doc["_lease"]
        lease_s = float(req.number("lease_s") or lease.get("lease_s") or 60.0)
        doc["_lease"] = {**lease, "expires": clock.now() + lease_s, "lease_s": lease_s}
        doc["last_update"] = clock.iso()
        ctx.store.save(conn, t.tasks, doc)
    return {"expires_in_s": lease_s, "status": doc.get("status"), "status_message": doc.get("status_message")}


@endpoint(RENEW_LEASES)
def renew_many(ctx: CallContext, req: Request) -> dict:
    """Many claims' leases renewed in one transaction (shipyard.protocol.RENEW_LEASES); a claim that
    `tasks.renew_lease` would refuse as stale is listed in `stale` and left as it is."""
    schema.check(schema.REQUESTS[RENEW_LEASES], req.body)
    claims = {item["task"]: item["attempt"] for item in req.body["tasks"]}
    if len(claims) > MAX_RENEWALS:
        raise errors.validation(f"field 'tasks' may hold at most {MAX_RENEWALS} tasks, got {len(claims)}")
    asked = req.number("lease_s")
    renewed, superseded = [], []
    with ctx.store.tx() as conn:
        for task_id, doc in ctx.store.get_each(conn, t.tasks, sorted(claims)).items():
            lease = doc.get("_lease")
            if doc.get("_attempt") != claims[task_id] or not lease:
                superseded.append(task_id)
                continue
            lease_s = float(asked or lease.get("lease_s") or 60.0)
            doc["_lease"] = {**lease, "expires": clock.now() + lease_s, "lease_s": lease_s}
            doc["last_update"] = clock.iso()
            ctx.store.save(conn, t.tasks, doc)
            renewed.append(task_id)
    return {"renewed": renewed, "stale": superseded}


@endpoint("tasks.release")
def release(ctx: CallContext, req: Request) -> dict:
    """The holder gives the task back: `retry` re-queues it (infrastructure trouble), else it fails.
    Only while the claim holds its lease: a release after the task was handed back already (by its
    agent or by someone acting for it), reaped or ended is refused as stale, so a preemption or a
    run is never counted twice and a finished task is never re-queued."""
    task_id, attempt = req.id("task", "task"), req.integer("attempt", required=True)
    reason = req.text("reason") or "released by its agent"
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        check_held(doc, attempt)   # already handed back, reaped or ended: a second release changes nothing
        if _preempted(req, reason) and _queue_of(doc):
            outcome = requeue_preempted(ctx, conn, doc, reason)
        elif req.flag("retry", True):
            outcome = requeue_or_fail(ctx, conn, doc, reason)
        else:
            close_attempt(doc, reason, ctx, conn)
            taskdoc.change_status(ctx, conn, doc, TaskStatus.FAILED, force=True, reason=reason,
                                  extra={"completed": clock.iso()})
            outcome = LeaseOutcome.FAILED
    return {"outcome": outcome}


@endpoint("workers.reconcile")
def reconcile(ctx: CallContext, req: Request) -> dict:
    """A (re)starting agent: tasks the server believes it holds go back to their queues."""
    worker = req.text("worker", required=True)
    released = []
    with ctx.store.tx() as conn:
        for doc in ctx.store.get_many(conn, t.tasks, [t.tasks.c.lease_expires.is_not(None)]):
            if (doc.get("_lease") or {}).get("worker") == worker:
                released.append({"task": doc["id"], "outcome": requeue_or_fail(
                    ctx, conn, doc, f"worker {worker} restarted while holding it")})
    return {"released": released}
