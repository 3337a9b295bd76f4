"""Queue entries: the rows under a queue, in order, and the queue-row lookups other services call.

    the prepared statements   the package's (Prepared once), the claim's task-status read among them
    entries, add_entry        a queue's entries in order; an entry added at the back (or front), waking long-polls
    remove_task_entries       a task's entries gone (from one queue or from all)
    pop, pop_if_head          the atomic pop of the head (one statement), or of one named task,
                              or the fair-share pop when quotas are in force (server/fairshare/usage.py)
    not_empty_or_gone         which of the queues long-polls take as empty have entries after all
    require_queue             a queue id checked to exist, without loading its document
    find_queue_by_name        a queue's id by its name

Every change to a queue's entries samples its length and wait (server/services/queues/metrics.py).
No endpoints here: crud.py answers the queues.* endpoints (and re-exports these names), claim.py
queues.get_next_task.
"""
from __future__ import annotations

from sqlalchemy import bindparam, delete, exists, func, null, select, true, union_all

from server import errors, replicas
from server.fairshare import usage as fair
from server.rpc.registry import CallContext
from server.services.queues import metrics as queue_metrics
from server.storage import tables as t
from server.storage.prepared import Prepared
from shipyard import clock

# -- entries ------------------------------------------------------------------------------


_E = t.queue_entries
_Q = t.queues
# Prepared once, executed with parameters (see server/storage/prepared.py).
_ENTRIES = Prepared(select(_E.c.task, _E.c.added).where(_E.c.queue == bindparam("q"))
                    .order_by(_E.c.position, _E.c.seq))
_MIN_POS = Prepared(select(func.min(_E.c.position)).where(_E.c.queue == bindparam("q")))
_INSERT = Prepared(_E.insert().values(queue=bindparam("queue"), task=bindparam("task"),
                                      position=bindparam("position"), added=bindparam("added")))
# At the back, in one statement: the position after the queue's last (0 in an empty queue).
_APPEND_ROW = _E.insert().from_select(
    ["queue", "task", "position", "added"],
    select(bindparam("queue", type_=_E.c.queue.type), bindparam("task", type_=_E.c.task.type),
           func.coalesce(func.max(_E.c.position) + 1.0, 0.0), bindparam("added", type_=_E.c.added.type))
    .where(_E.c.queue == bindparam("queue")))
_APPEND = Prepared(_APPEND_ROW)
# PostgreSQL: the same, and the wake-up of other replicas' long-polls (replicas.publish) with it
_APPENDED = _APPEND_ROW.returning(_E.c.queue).cte("appended")
_APPEND_PUBLISH = Prepared(select(func.pg_notify(replicas.CHANNEL, _APPENDED.c.queue)).select_from(_APPENDED))
# One statement: the entries go, and the queues they were in come back (for their metrics samples)
_REMOVE_TASK = Prepared(delete(_E).where(_E.c.task == bindparam("t")).returning(_E.c.queue))
_REMOVE_TASK_FROM = Prepared(delete(_E).where(_E.c.task == bindparam("t")).where(_E.c.queue == bindparam("q")))
_HEAD = (select(_E.c.seq).where(_E.c.queue == bindparam("q")).order_by(_E.c.position, _E.c.seq).limit(1)
         .with_for_update(skip_locked=True).scalar_subquery())
_POP = Prepared(delete(_E).where(_E.c.seq == _HEAD).returning(_E.c.task, _E.c.added))
# PostgreSQL: the pop and the popped task's status in one statement (a DELETE in a WITH); when
# nothing was popped, one row of NULLs saying whether the queue exists and whether it has entries
# (other pops hold them), so an empty pop - every idle agent's long-poll - is one statement
_POPPED = delete(_E).where(_E.c.seq == _HEAD).returning(_E.c.task, _E.c.added).cte("popped")
_POP_STATUS = Prepared(union_all(
    select(_POPPED.c.task, _POPPED.c.added, t.tasks.c.status, true().label("queue"), true().label("entries"))
    .select_from(_POPPED.outerjoin(t.tasks, t.tasks.c.id == _POPPED.c.task)),
    select(null(), null(), null(), exists().where(_Q.c.id == bindparam("q")),
           exists().where(_E.c.queue == bindparam("q")))
    .where(~exists(select(_POPPED.c.task)))))
_POP_AGAIN = 2  # PostgreSQL: pops tried again when one found nothing while the queue has entries
_QUEUE_EXISTS = Prepared(select(_Q.c.id).where(_Q.c.id == bindparam("q")))
_QUEUE_BY_NAME = Prepared(select(_Q.c.id).where(_Q.c.name == bindparam("name")))
_TASK_STATUS = Prepared(select(t.tasks.c.status).where(t.tasks.c.id == bindparam("id")))

def entries(conn, queue_id: str) -> list[dict]:
    return [{"task": r.task, "added": clock.iso(r.added)} for r in conn.execute(_ENTRIES, {"q": queue_id})]


def _front_of(edge: float | None) -> float:
    """Below zero: the fair-share pop knows the entries the server put back in front."""
    return -1.0 if edge is None else min(edge, 0.0) - 1.0


def add_entry(conn, queue_id: str, task_id: str, *, front: bool = False) -> None:
    """The task's entry at the back of the queue (`front`: ahead of every entry); other replicas'
    long-polls on it are woken when this commits (replicas.publish)."""
    params = {"queue": queue_id, "task": task_id, "added": clock.now()}
    if front:
        params["position"] = _front_of(conn.execute(_MIN_POS, {"q": queue_id}).scalar())
        conn.execute(_INSERT, params)
        replicas.publish(conn, queue_id)
    elif replicas.is_postgres(conn):
        conn.execute(_APPEND_PUBLISH, params)  # one statement
    else:
        conn.execute(_APPEND, params)
    queue_metrics.sample(conn, queue_id)


def remove_task_entries(conn, task_id: str, queue_id: str | None = None) -> int:
    if queue_id is None:
        queues = [row[0] for row in conn.execute(_REMOVE_TASK, {"t": task_id})]
        removed = len(queues)
    else:
        removed = conn.execute(_REMOVE_TASK_FROM, {"t": task_id, "q": queue_id}).rowcount
        queues = [queue_id]
    for queue in sorted(set(queues)) if removed else ():
        queue_metrics.sample(conn, queue)
    return removed


def pop(conn, queue_id: str) -> tuple | None:
    """Remove and return the head entry (task, added), on PostgreSQL with the task's status
    (None: the task is gone). One statement, so two callers never get the same one."""
    postgres = conn.dialect.name == "postgresql"
    row = _pop_pg(conn, queue_id) if postgres else conn.execute(_POP, {"q": queue_id}).first()
    if row is None:
        return None
    queue_metrics.sample(conn, queue_id)
    return tuple(row)


def _pop_pg(conn, queue_id: str) -> tuple | None:
    """(task, added, status) popped, or None; the queue seen to exist is noted in the transaction
    (`Tx.seen`: require_queue then asks nothing), and seen without any entry (`Tx.empty`)."""
    for _ in range(1 + _POP_AGAIN):
        task, added, status, queue_exists, has_entries = conn.execute(_POP_STATUS, {"q": queue_id}).first()
        if queue_exists:
            conn.seen.add(("queues", queue_id))
        if task is not None:
            return task, added, status
        # A pop's statement sees the entries committed before it started, and skips those
        # another pop holds. Another agent's pop may hold this caller's entry while the entry
        # that agent itself enqueued came too late for this statement to see: nothing, with
        # an entry there for it. A new statement sees the newer entries (READ COMMITTED).
        if not has_entries:
            if queue_exists:
                conn.empty.add(queue_id)  # no entry at all, held or not (Notifier.found_empty)
            return None
    return None


def pop_if_head(conn, queue_id: str, task_id: str | None, ctx: CallContext | None = None,
                quotas: dict | None = None) -> tuple[str, float] | None:
    """`pop`, or with `task_id` pop only when that task is at the head (queues.get_next_task's `task`).
    With quotas in force, the next entry in fair-share order (server/fairshare/usage.py)."""
    if task_id is None and quotas and ctx is not None:
        popped = fair.pop_fair(ctx, conn, queue_id, quotas)
        if popped is not None:
            queue_metrics.sample(conn, queue_id)
        return popped
    if task_id is None:
        return pop(conn, queue_id)
    head = conn.execute(select(_E.c.task, _E.c.added).where(_E.c.queue == queue_id)
                        .order_by(_E.c.position, _E.c.seq).limit(1)).first()
    if head is None or head.task != task_id or not remove_task_entries(conn, task_id, queue_id):
        return None
    return head.task, head.added


def not_empty_or_gone(conn, queue_ids: list[str]) -> list[str]:
    """Of `queue_ids`, those that have entries or no longer exist, in one statement (the
    periodic check of the queues long-polls take as empty: server/notify.py)."""
    rows = conn.execute(select(_Q.c.id, exists().where(_E.c.queue == _Q.c.id)).where(_Q.c.id.in_(queue_ids))).all()
    found = {row[0]: bool(row[1]) for row in rows}
    return [qid for qid in queue_ids if found.get(qid, True)]


# -- queue ids ----------------------------------------------------------------------------


def require_queue(conn, queue_id: str) -> str:
    """The queue's id, checked to exist (without loading its document)."""
    if ("queues", queue_id) in conn.seen:
        return queue_id  # this transaction's pop saw it
    if not queue_id or conn.execute(_QUEUE_EXISTS, {"q": queue_id}).first() is None:
        raise errors.invalid_id("queue", queue_id)
    return queue_id


def find_queue_by_name(conn, name: str) -> str | None:
    row = conn.execute(_QUEUE_BY_NAME, {"name": name}).first()
    return row[0] if row else None
