"""workers.*: registration, status reports (machine stats), listing. A worker that has not
reported within its `timeout` disappears from listings, as with the reference server."""
from __future__ import annotations

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.storage import tables as t
from shipyard import clock
from shipyard.protocol import Subcode

DEFAULT_TIMEOUT_S = 600

def _queue_refs(ctx: CallContext, conn, ids: list[str]) -> list[dict]:
    refs = []
    for queue_id in ids:
        doc = ctx.store.get(conn, t.queues, queue_id)
        refs.append({"id": queue_id, "name": doc["name"] if doc else queue_id,
                     "num_tasks": 0})
    return refs

def _upsert(ctx: CallContext, conn, worker_id: str, update: dict) -> dict:
    doc = ctx.store.get(conn, t.workers, worker_id)
    now = clock.iso()
    if doc is None:
        doc = {"id": worker_id, "user": {"id": ctx.identity.user, "name": ctx.identity.user_name},
               "company": {"id": ctx.identity.company, "name": ctx.identity.company},
               "register_time": now, "queues": [], "tags": [], "system_tags": [],
               "timeout": DEFAULT_TIMEOUT_S}
        doc.update(update)
        doc["last_activity_time"] = now
        ctx.store.insert(conn, t.workers, doc)
    else:
        doc.update(update)
        doc["last_activity_time"] = now
        ctx.store.save(conn, t.workers, doc)
    return doc

@endpoint("workers.register")
def register(ctx: CallContext, req: Request) -> dict:
    worker = req.text("worker", required=True)
    schema.check(schema.WORKER, req.body)
    update = {"timeout": req.integer("timeout", DEFAULT_TIMEOUT_S), "tags": req.str_list("tags", []),
              "system_tags": req.str_list("system_tags", []), "ip": ctx.client_ip}
    with ctx.store.tx() as conn:
        update["queues"] = _queue_refs(ctx, conn, req.str_list("queues", []) or [])
        _upsert(ctx, conn, worker, update)
    return {}

@endpoint("workers.unregister")
def unregister(ctx: CallContext, req: Request) -> dict:
    worker = req.text("worker", required=True)
    with ctx.store.tx() as conn:
        if not ctx.store.delete(conn, t.workers, worker):
            raise errors.APIError(400, Subcode.WORKER_NOT_REGISTERED, f"Worker is not registered: worker={worker}")
    return {}

@endpoint("workers.status_report")
def status_report(ctx: CallContext, req: Request) -> dict:
    worker = req.text("worker", required=True)
    schema.check(schema.WORKER_REPORT, req.body)
    now = clock.iso()
    update: dict = {"last_report_time": now, "machine_stats": req.mapping("machine_stats", {})}
    task_id = req.text("task")
    with ctx.store.tx() as conn:
        if req.str_list("queues") is not None:
            update["queues"] = _queue_refs(ctx, conn, req.str_list("queues") or [])
        if req.text("queue"):  # a QueueEntry {id, name, ...}, as the SDK's workers.Worker expects
            update["queue"] = _queue_refs(ctx, conn, [req.text("queue")])[0]
        task = ctx.store.get(conn, t.tasks, task_id) if task_id else None
        update["task"] = {"id": task["id"], "name": task.get("name"), "running_time": 0} if task else None
        update["project"] = {"id": task.get("project")} if task and task.get("project") else None
        if req.str_list("tags") is not None:
            update["tags"] = req.str_list("tags")
        _upsert(ctx, conn, worker, update)
        if task is not None:
            task.update({"last_worker": worker, "last_worker_report": now, "last_update": now})
            ctx.store.save(conn, t.tasks, task)
    return {}

def live_workers(ctx: CallContext, conn, last_seen: int | None = None) -> list[dict]:
    now = clock.now()
    out = []
    for doc in ctx.store.get_many(conn, t.workers):
        age = now - clock.parse_iso(doc.get("last_activity_time") or doc["register_time"])
        limit = last_seen if last_seen else doc.get("timeout") or DEFAULT_TIMEOUT_S
        if age <= limit:
            worker = {k: v for k, v in doc.items() if v is not None}
            if isinstance(worker.get("queue"), str):  # stored as a bare id before it was an entry
                worker["queue"] = {"id": worker["queue"], "name": worker["queue"], "num_tasks": 0}
            out.append(worker)
    return sorted(out, key=lambda d: d["id"])

@endpoint("workers.get_all")
def get_all(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        workers = live_workers(ctx, conn, req.integer("last_seen"))
    return {"workers": workers}

@endpoint("workers.get_count")
def get_count(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        return {"count": len(live_workers(ctx, conn, req.integer("last_seen")))}
