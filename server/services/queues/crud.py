"""queues.*: queue documents and the endpoints over them and their entries (all but the claim).

    load_queue, create_queue,           queue documents (ensure_default_queue: at start-up)
    ensure_default_queue
    queues.create, get_by_id, get_all,  the queues with their entries (get_all_ex: with the live
    get_all_ex, get_default, update,    workers serving each queue, as the web UI shows them)
    delete
    queues.add_task, remove_task,       entries added, removed, counted, peeked at, cleared
    get_num_entries, peek_task,
    clear_queue
    queues.add_or_update_metadata,      a queue's metadata
    delete_metadata
    queues.get_queue_metrics            queue length and wait over time (metrics.py)
    queues.move_task_*                  an entry moved forward, backward, to the front or to the back

The entries and the atomic pop are entries.py; queues.get_next_task (the claim, the long-poll) is
claim.py. Names other modules import from here stay importable here: the entry functions
(add_entry, remove_task_entries, pop, require_queue, ...) and the claim's (_try_pop_many, _Ask).
Every change to a queue's entries samples its length and wait (server/services/queues/metrics.py,
which also answers queues.get_queue_metrics)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update

from server import errors, query, replicas
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.queues import metrics as queue_metrics
from server.services.queues.claim import _Ask, _try_pop_many, get_next_task  # noqa: F401  (re-exported)
from server.services.queues.entries import (  # noqa: F401  (re-exported: leases, tasks.status, tests import them here)
    _Q,
    add_entry,
    entries,
    find_queue_by_name,
    pop,
    pop_if_head,
    remove_task_entries,
    require_queue,
)
from server.services.tasks import doc as taskdoc
from server.services.workers import crud as workers
from server.storage import tables as t
from server.storage.store import new_id
from shipyard import clock
from shipyard.protocol import Subcode, SystemTag, TaskStatus

DEFAULT_QUEUE = "default"
HIDDEN_TAGS = frozenset({"k8s-glue"})  # system tags of queues get_all hides unless search_hidden, id or name

# -- queue documents ----------------------------------------------------------------------


def load_queue(ctx: CallContext, conn, queue_id: str) -> dict:
    doc = ctx.store.get(conn, t.queues, queue_id) if queue_id else None
    if doc is None:
        raise errors.invalid_id("queue", queue_id)
    return doc


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
        replicas.publish(conn, queue_id)  # long-polls on it, on every replica, look and find it gone
    if ctx.notifier:
        ctx.notifier.notify(queue_id)
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
