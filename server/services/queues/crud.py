"""queues.*: queue documents and their ordered entries, with an atomic pop and long-poll.

Every change to a queue's entries samples its length and wait (server/services/queue_metrics.py,
which also answers queues.get_queue_metrics)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update

from server import errors, query, replicas
from server.fairshare import usage as fair
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.queues import metrics as queue_metrics
from server.services.tasks import doc as taskdoc
from server.services.workers import crud as workers
from server.storage import tables as t
from server.storage.prepared import Prepared
from server.storage.store import new_id, retrying
from shipyard import clock
from shipyard.protocol import CLAIM_COUNT, CLAIMS, MAX_CLAIM_COUNT, Subcode, SystemTag, TaskStatus

DEFAULT_QUEUE = "default"
HIDDEN_TAGS = frozenset({"k8s-glue"})  # system tags of queues get_all hides unless search_hidden, id or name

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
# PostgreSQL: the pop and the popped task's status in one statement (a DELETE in a WITH)
_POPPED = delete(_E).where(_E.c.seq == _HEAD).returning(_E.c.task, _E.c.added).cte("popped")
_POP_STATUS = Prepared(select(_POPPED.c.task, _POPPED.c.added, t.tasks.c.status)
                       .select_from(_POPPED.outerjoin(t.tasks, t.tasks.c.id == _POPPED.c.task)))
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
    if conn.dialect.name == "postgresql":
        row = conn.execute(_POP_STATUS, {"q": queue_id}).first()
    else:
        row = conn.execute(_POP, {"q": queue_id}).first()
    if row is None:
        return None
    queue_metrics.sample(conn, queue_id)
    return tuple(row)


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


# -- queue documents ----------------------------------------------------------------------


def load_queue(ctx: CallContext, conn, queue_id: str) -> dict:
    doc = ctx.store.get(conn, t.queues, queue_id) if queue_id else None
    if doc is None:
        raise errors.invalid_id("queue", queue_id)
    return doc


def require_queue(conn, queue_id: str) -> str:
    """The queue's id, checked to exist (without loading its document)."""
    if not queue_id or conn.execute(_QUEUE_EXISTS, {"q": queue_id}).first() is None:
        raise errors.invalid_id("queue", queue_id)
    return queue_id


def find_queue_by_name(conn, name: str) -> str | None:
    row = conn.execute(_QUEUE_BY_NAME, {"name": name}).first()
    return row[0] if row else None


def create_queue(ctx: CallContext, conn, name: str, *, tags=None, system_tags=None,
                 display_name: str | None = None) -> str:
    if find_queue_by_name(conn, name):
        raise errors.APIError(400, Subcode.QUEUE_NAME_TAKEN, f"Queue with the same name already exists: name={name}")
    now = clock.iso()
    doc: dict[str, Any] = {"id": new_id(), "name": name, "display_name": display_name or name,
           "user": ctx.identity.user, "company": ctx.identity.company, "created": now,
           "last_update": now, "tags": tags or [], "system_tags": system_tags or [], "metadata": {}}
    ctx.store.insert(conn, t.queues, doc)
    return doc["id"]


def ensure_default_queue(store, identity) -> str:
    """Make sure a queue tagged `default` exists (the server calls this at start-up)."""
    from server.rpc.registry import CallContext as _Ctx
    ctx = _Ctx(store=store, identity=identity, endpoint="startup", version="2.31")
    with store.tx() as conn:
        for doc in store.get_many(conn, t.queues):
            if SystemTag.DEFAULT in (doc.get("system_tags") or []):
                return doc["id"]
        existing = find_queue_by_name(conn, DEFAULT_QUEUE)
        if existing:
            doc = store.get(conn, t.queues, existing)
            doc["system_tags"] = sorted(set(doc.get("system_tags") or []) | {SystemTag.DEFAULT})
            store.save(conn, t.queues, doc)
            return existing
        return create_queue(ctx, conn, DEFAULT_QUEUE, system_tags=[SystemTag.DEFAULT])


def _with_entries(conn, doc: dict, max_entries: int | None = None, count: bool = False) -> dict:
    listed = entries(conn, doc["id"])
    extra = {"count": len(listed)} if count else {}
    return {**doc, **extra, "entries": listed[:max_entries] if max_entries is not None else listed}


def _hidden(doc: dict) -> bool:
    return bool(HIDDEN_TAGS.intersection(doc.get("system_tags") or []))


def _serving(ctx: CallContext, conn) -> dict[str, list[dict]]:
    """{queue id: the live workers listening on it, as get_all_ex lists them}."""
    out: dict[str, list[dict]] = {}
    for worker in workers.live_workers(ctx, conn):
        entry = {"name": worker["id"], "ip": worker.get("ip"), "key": worker.get("key"), "task": worker.get("task")}
        for queue in worker.get("queues") or []:
            out.setdefault(queue["id"] if isinstance(queue, dict) else queue, []).append(entry)
    return out


@endpoint("queues.create")
def create(ctx: CallContext, req: Request) -> dict:
    name = req.text("name", required=True).strip()
    if not name:
        raise errors.missing_field("name")
    with ctx.store.tx() as conn:
        return {"id": create_queue(ctx, conn, name, tags=req.str_list("tags"),
                                   system_tags=req.str_list("system_tags"),
                                   display_name=req.text("display_name"))}


@endpoint("queues.get_by_id")
def get_by_id(ctx: CallContext, req: Request) -> dict:
    queue_id = req.id("queue", "queue")
    schema.check(schema.REQUESTS["queues.get_by_id"], req.body)
    with ctx.store.tx() as conn:
        doc = load_queue(ctx, conn, queue_id)
        return {"queue": _with_entries(conn, doc, _max_entries(req))}


def _max_entries(req: Request) -> int | None:
    limit = req.integer("max_task_entries")
    if limit is not None and limit < 0:
        raise errors.validation(f"field 'max_task_entries' must be 0 or more, got {limit}")
    return limit


def _list(ctx: CallContext, conn, req: Request) -> list[dict]:
    ids = req.str_list("id")
    docs = ctx.store.get_many(conn, t.queues, [t.queues.c.id.in_(ids)] if ids else [])
    if not (ids or req.raw("name") or req.flag("search_hidden")):
        docs = [d for d in docs if not _hidden(d)]
    limit, count = _max_entries(req), req.flag("count_task_entries")
    return [_with_entries(conn, d, limit, count) for d in docs]


@endpoint("queues.get_all")
def get_all(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["queues.get_all"], req.body)
    with ctx.store.tx() as conn:
        docs = _list(ctx, conn, req)
    return {"queues": query.apply(docs, req.body, default_order="created")}


def _task_names(conn, docs: list[dict]) -> dict[str, str]:
    ids = {e["task"] for doc in docs for e in doc["entries"]}
    rows = conn.execute(select(t.tasks.c.id, t.tasks.c.name).where(t.tasks.c.id.in_(ids))) if ids else []
    return {row.id: row.name for row in rows}


@endpoint("queues.get_all_ex")
def get_all_ex(ctx: CallContext, req: Request) -> dict:
    """get_all, with each queue's `workers` (the live workers listening on it) and its entries'
    tasks as {id, name}, as the reference server joins them for the web UI."""
    schema.check(schema.REQUESTS["queues.get_all_ex"], req.body)
    with ctx.store.tx() as conn:
        docs = _list(ctx, conn, req)
        serving = _serving(ctx, conn)
        names = _task_names(conn, docs)
    for doc in docs:
        doc["workers"] = serving.get(doc["id"], [])
        doc["entries"] = [{**e, "task": {"id": e["task"], "name": names.get(e["task"])}} for e in doc["entries"]]
    return {"queues": query.apply(docs, req.body, default_order="created")}


@endpoint("queues.get_default")
def get_default(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        for doc in ctx.store.get_many(conn, t.queues):
            if SystemTag.DEFAULT in (doc.get("system_tags") or []):
                return {"id": doc["id"], "name": doc["name"]}
    raise errors.APIError(400, Subcode.NO_DEFAULT_QUEUE, "No queue is tagged as the default queue")


@endpoint("queues.update")
def update_queue(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        doc = load_queue(ctx, conn, req.id("queue", "queue"))
        fields = {k: req.body[k] for k in ("name", "display_name", "tags", "system_tags") if k in req}
        schema.check(schema.QUEUE, fields)
        if "name" in fields:
            fields["name"] = fields["name"].strip()
            if not fields["name"]:
                raise errors.missing_field("name")
            if find_queue_by_name(conn, fields["name"]) not in (None, doc["id"]):
                raise errors.APIError(400, Subcode.QUEUE_NAME_TAKEN,
                                      f"Queue with the same name already exists: name={fields['name']}")
        doc.update(fields)
        doc["last_update"] = clock.iso()
        ctx.store.save(conn, t.queues, doc)
    return {"updated": 1, "fields": fields}


@endpoint("queues.delete")
def delete_queue(ctx: CallContext, req: Request) -> dict:
    queue_id = req.id("queue", "queue")
    with ctx.store.tx() as conn:
        require_queue(conn, queue_id)
        waiting = entries(conn, queue_id)
        if waiting and not req.flag("force"):
            raise errors.APIError(400, Subcode.QUEUE_NOT_EMPTY,
                                  f"Queue is not empty ({len(waiting)} tasks); use force=true")
        conn.execute(delete(t.queue_entries).where(t.queue_entries.c.queue == queue_id))
        for entry in waiting:
            _back_from_queue(ctx, conn, entry["task"], queue_id, f"Queue {queue_id} was deleted")
        ctx.store.delete(conn, t.queues, queue_id)
    return {"deleted": 1}


def _back_from_queue(ctx: CallContext, conn, task_id: str, queue_id: str, reason: str) -> None:
    """A task taken out of a queue it was waiting in returns to its status before enqueuing
    (or created), without the queue in its execution."""
    doc = ctx.store.get(conn, t.tasks, task_id)
    if doc is None or doc.get("status") != TaskStatus.QUEUED:
        return
    execution = {k: v for k, v in (doc.get("execution") or {}).items() if k != "queue"}
    taskdoc.change_status(ctx, conn, doc, doc.get("enqueue_status") or TaskStatus.CREATED, force=True,
                          reason=reason, extra={"execution": execution, "enqueue_status": None})


@endpoint("queues.add_task")
def add_task(ctx: CallContext, req: Request) -> dict:
    """Add an entry for the task; its execution.queue becomes this queue (unless
    update_execution_queue is false). Its status stays as it is, as with the reference server."""
    queue_id, task_id = req.id("queue", "queue"), req.id("task", "task")
    schema.check(schema.REQUESTS["queues.add_task"], req.body)
    with ctx.store.tx() as conn:
        require_queue(conn, queue_id)
        task = taskdoc.load(ctx, conn, task_id)
        if conn.execute(select(t.queue_entries.c.seq).where(t.queue_entries.c.queue == queue_id)
                        .where(t.queue_entries.c.task == task_id)).first():
            raise errors.APIError(400, Subcode.TASK_ALREADY_QUEUED, f"Task already in queue: task={task_id}")
        add_entry(conn, queue_id, task_id)
        if req.flag("update_execution_queue", True):
            task["execution"] = {**(task.get("execution") or {}), "queue": queue_id}
            taskdoc.touch(ctx, task)
            ctx.store.save(conn, t.tasks, task)
    if ctx.notifier:
        ctx.notifier.notify(queue_id)
    return {"added": 1}


@endpoint("queues.remove_task")
def remove_task(ctx: CallContext, req: Request) -> dict:
    queue_id, task_id = req.id("queue", "queue"), req.id("task", "task")
    with ctx.store.tx() as conn:
        require_queue(conn, queue_id)
        removed = remove_task_entries(conn, task_id, queue_id)
        if removed and req.flag("update_task_status"):
            doc = taskdoc.load(ctx, conn, task_id)
            if doc.get("status") == TaskStatus.QUEUED:
                back = doc.get("enqueue_status") or TaskStatus.CREATED
                taskdoc.change_status(ctx, conn, doc, back, force=True, reason="removed from queue")
    return {"removed": removed}


@endpoint("queues.get_num_entries")
def num_entries(ctx: CallContext, req: Request) -> dict:
    queue_id = req.id("queue", "queue")
    with ctx.store.tx() as conn:
        require_queue(conn, queue_id)
        count = conn.execute(select(func.count()).select_from(t.queue_entries)
                             .where(t.queue_entries.c.queue == queue_id)).scalar()
    return {"num": count}


@endpoint("queues.peek_task")
def peek_task(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        head = entries(conn, require_queue(conn, req.id("queue", "queue")))
    return {"task": head[0]["task"] if head else None} if head else {}


@endpoint("queues.clear_queue")
def clear_queue(ctx: CallContext, req: Request) -> dict:
    queue_id = req.id("queue", "queue")
    with ctx.store.tx() as conn:
        require_queue(conn, queue_id)
        removed = [e["task"] for e in entries(conn, queue_id)]
        conn.execute(delete(t.queue_entries).where(t.queue_entries.c.queue == queue_id))
        queue_metrics.sample(conn, queue_id)
        for task_id in removed:
            doc = ctx.store.get(conn, t.tasks, task_id)
            if doc and doc.get("status") == TaskStatus.QUEUED:
                taskdoc.change_status(ctx, conn, doc, doc.get("enqueue_status") or TaskStatus.CREATED,
                                      force=True, reason="queue cleared")
    return {"removed_tasks": removed}


@endpoint("queues.add_or_update_metadata")
def add_or_update_metadata(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["queues.add_or_update_metadata"], req.body)
    items = {item["key"]: {"key": item["key"], "type": item.get("type"), "value": item.get("value")}
             for item in req.body["metadata"]}
    with ctx.store.tx() as conn:
        doc = load_queue(ctx, conn, req.id("queue", "queue"))
        base = {} if req.flag("replace_metadata") else dict(doc.get("metadata") or {})
        doc["metadata"] = {**base, **items}
        doc["last_update"] = clock.iso()
        ctx.store.save(conn, t.queues, doc)
    return {"updated": 1}


@endpoint("queues.delete_metadata")
def delete_metadata(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["queues.delete_metadata"], req.body)
    with ctx.store.tx() as conn:
        doc = load_queue(ctx, conn, req.id("queue", "queue"))
        metadata = dict(doc.get("metadata") or {})
        removed = [key for key in req.body["keys"] if metadata.pop(key, None) is not None]
        if removed:
            doc["metadata"] = metadata
            doc["last_update"] = clock.iso()
            ctx.store.save(conn, t.queues, doc)
    return {"updated": 1 if removed else 0}


@endpoint("queues.get_queue_metrics")
def get_queue_metrics(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["queues.get_queue_metrics"], req.body)
    with ctx.store.tx() as conn:
        queue_ids = list(conn.execute(select(_Q.c.id)).scalars())
        return {"queues": queue_metrics.metrics(conn, req.body, queue_ids)}


def _move(ctx: CallContext, req: Request, where: str) -> dict:
    queue_id, task_id = req.id("queue", "queue"), req.id("task", "task")
    count = max(1, req.integer("count", 1) or 1)
    with ctx.store.tx() as conn:
        require_queue(conn, queue_id)
        rows = conn.execute(select(t.queue_entries.c.seq, t.queue_entries.c.task)
                            .where(t.queue_entries.c.queue == queue_id)
                            .order_by(t.queue_entries.c.position, t.queue_entries.c.seq)).all()
        order = [r.seq for r in rows]
        tasks = [r.task for r in rows]
        if task_id not in tasks:
            raise errors.APIError(400, Subcode.TASK_NOT_QUEUED, f"Task not in queue: task={task_id}")
        index = tasks.index(task_id)
        target = {"forward": index - count, "backward": index + count, "front": 0,
                  "back": len(order) - 1}[where]
        target = max(0, min(len(order) - 1, target))
        seq = order.pop(index)
        order.insert(target, seq)
        for position, entry_seq in enumerate(order):
            conn.execute(update(t.queue_entries).where(t.queue_entries.c.seq == entry_seq)
                         .values(position=float(position)))
    return {"position": target}


@endpoint("queues.move_task_forward")
def move_forward(ctx: CallContext, req: Request) -> dict:
    return _move(ctx, req, "forward")


@endpoint("queues.move_task_backward")
def move_backward(ctx: CallContext, req: Request) -> dict:
    return _move(ctx, req, "backward")


@endpoint("queues.move_task_to_front")
def move_front(ctx: CallContext, req: Request) -> dict:
    return _move(ctx, req, "front")


@endpoint("queues.move_task_to_back")
def move_back(ctx: CallContext, req: Request) -> dict:
    return _move(ctx, req, "back")


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


def _try_pop_many(ctx: CallContext, queue_ids: list[str], ask: _Ask) -> list[dict]:
    """Up to `ask.count` claims in one transaction: the queues in their priority order, each
    drained before the next, every pop under the fair-share rules as the claims before it in
    this transaction left them (each leased claim counts as running at once)."""
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
    `wait_s` (long-poll: wait up to that many seconds for an entry), `lease_s` (the claim is
    a lease the caller renews; see server/services/leases.py) and `with_task` (the popped task's
    document, as tasks.get_by_id gives it, in `task`). With `task`, the head is taken
    only when it is that task. `gpus`: how many GPUs the claimer gives the task (fair share
    counts them; else the task's `Shipyard/gpus` parameter, else 1). `count` (CLAIM_COUNT): up to
    that many entries in one transaction, answered as {"claims": [...]}, as soon as one is there."""
    queue_ids = req.str_list("queues") or [req.id("queue", "queue")]
    wait_s = min(max(0.0, req.number("wait_s", 0.0) or 0.0), ctx.settings.long_poll_max_s
                 if ctx.settings else 60.0)
    ask = _ask(ctx, req)
    deadline = time.monotonic() + wait_s
    while True:
        if ctx.settings is not None:  # without waiting on the database lock on the event loop
            claims = await ctx.settings.run_db(retrying, _try_pop_many, ctx, queue_ids, ask)
        else:
            claims = retrying(_try_pop_many, ctx, queue_ids, ask)
        if claims:
            return _answer(req, claims)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ctx.notifier is None or ctx.notifier.closed:
            return _answer(req, [])
        await ctx.notifier.wait(queue_ids, remaining)
        if ctx.notifier.closed:
            return _answer(req, [])  # the server is stopping: the caller may be gone too, so pop nothing for it
        gone = ctx.is_disconnected
        if gone is not None and await gone():
            return _answer(req, [])  # the caller left: don't pop a task nobody will receive


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
