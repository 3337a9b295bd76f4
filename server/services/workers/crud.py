"""workers.*: registration, status reports (machine stats; the queued tasks whose environment the
worker prepared, `prepared`), listing. A worker that has not
reported within its `timeout` disappears from listings, as with the reference server; the
machine stats it reported stay for the charts (server/services/worker_stats.py)."""
from __future__ import annotations

import fnmatch

from sqlalchemy import select

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.workers import stats as worker_stats
from server.storage import tables as t
from shipyard import clock
from shipyard.protocol import WORKER_PREPARED, Subcode, TaskStatus

DEFAULT_TIMEOUT_S = 600
GET_ALL_LAST_SEEN_S = 3600  # workers.get_all's default `last_seen`; get_count's is 0 (no filter)

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
    timeout = req.integer("timeout") or DEFAULT_TIMEOUT_S
    if timeout <= 0:
        raise errors.validation(f"field 'timeout' must be a positive number of seconds, got {timeout}")
    update = {"timeout": timeout, "tags": req.str_list("tags", []),
              "system_tags": req.str_list("system_tags", []), "ip": ctx.client_ip}
    with ctx.store.tx() as conn:
        update["queues"] = _queue_refs(ctx, conn, req.str_list("queues", []) or [])
        _upsert(ctx, conn, worker, update)
    return {}

@endpoint("workers.unregister")
def unregister(ctx: CallContext, req: Request) -> dict:
    worker = req.text("worker", required=True)
    with ctx.store.tx() as conn:
        doc = ctx.store.get(conn, t.workers, worker)
        expired = doc is not None and _expired(doc, _age(doc))
        if not ctx.store.delete(conn, t.workers, worker) or expired:
            raise errors.APIError(400, Subcode.WORKER_NOT_REGISTERED, f"Worker is not registered: worker={worker}")
    return {}

def _project_ref(ctx: CallContext, conn, project_id: str | None) -> dict | None:
    doc = ctx.store.get(conn, t.projects, project_id) if project_id else None
    return {"id": project_id, "name": doc["name"] if doc else None} if project_id else None


def _report_update(ctx: CallContext, conn, req: Request, task: dict | None) -> dict:
    """The worker fields a report sets. As on the reference server, a report without `task`
    or `queue` clears them; `queues` and the tags change only when sent."""
    update: dict = {"last_report_time": clock.iso(), "machine_stats": req.mapping("machine_stats", {})}
    if req.str_list("queues") is not None:
        update["queues"] = _queue_refs(ctx, conn, req.str_list("queues") or [])
    # a QueueEntry {id, name, ...}, as the SDK's workers.Worker expects
    update["queue"] = _queue_refs(ctx, conn, [req.text("queue")])[0] if req.text("queue") else None
    update["task"] = {"id": task["id"], "name": task.get("name")} if task else None
    update["project"] = _project_ref(ctx, conn, task.get("project")) if task else None
    for key in ("tags", "system_tags"):
        if req.str_list(key) is not None:
            update[key] = req.str_list(key)
    if req.mapping(WORKER_PREPARED) is not None:   # prepare while queued: {task id: state}, when sent
        update[WORKER_PREPARED] = req.mapping(WORKER_PREPARED)
    return update


@endpoint("workers.status_report")
def status_report(ctx: CallContext, req: Request) -> dict:
    worker = req.text("worker", required=True)
    schema.check(schema.WORKER_REPORT, req.body)
    task_id = req.text("task")
    with ctx.store.tx() as conn:
        task = ctx.store.get(conn, t.tasks, task_id) if task_id else None
        update = _report_update(ctx, conn, req, task)
        _upsert(ctx, conn, worker, update)
        worker_stats.record(conn, worker, task_id if task else None, update["machine_stats"], req.raw("timestamp"))
        if task is not None:
            now = update["last_report_time"]
            task.update({"last_worker": worker, "last_worker_report": now, "last_update": now})
            ctx.store.save(conn, t.tasks, task)
    return {}


def tags_match(have: list[str] | None, wanted: list[str] | None) -> bool:
    """ClearML's worker tag filter: any of the plain tags, none of the `-tag` ones."""
    if not wanted:
        return True
    present = set(have or [])
    include = [tag for tag in wanted if not tag.startswith("-")]
    exclude = {tag[1:] for tag in wanted if tag.startswith("-")}
    return (not include or bool(present.intersection(include))) and not present & exclude


def _age(doc: dict, now: float | None = None) -> float:
    return (now or clock.now()) - clock.parse_iso(doc.get("last_activity_time") or doc["register_time"])


def _expired(doc: dict, age: float) -> bool:
    return age > (doc.get("timeout") or DEFAULT_TIMEOUT_S)


def _as_listed(doc: dict) -> dict:
    worker = {k: v for k, v in doc.items() if v is not None}
    if isinstance(worker.get("queue"), str):  # stored as a bare id before it was an entry
        worker["queue"] = {"id": worker["queue"], "name": worker["queue"], "num_tasks": 0}
    worker.setdefault("key", doc["id"])
    return worker


def live_workers(ctx: CallContext, conn, last_seen: int | None = None, req: Request | None = None) -> list[dict]:
    """The registered workers whose timeout has not passed since their last report, seen in the
    last `last_seen` seconds (0/None: any), filtered by the request's tags, system_tags and
    worker_pattern when given."""
    now = clock.now()
    pattern = req.text("worker_pattern") if req else None
    out = []
    for doc in ctx.store.get_many(conn, t.workers):
        age = _age(doc, now)
        if _expired(doc, age):  # gone, as the reference server's entry expires: forget it
            ctx.store.delete(conn, t.workers, doc["id"])
            continue
        if (last_seen and age > last_seen) or (pattern and not fnmatch.fnmatchcase(doc["id"], pattern)):
            continue
        if req and not all(tags_match(doc.get(k), req.str_list(k)) for k in ("tags", "system_tags")):
            continue
        out.append(_as_listed(doc))
    return sorted(out, key=lambda d: d["id"])


def _queue_now(ctx: CallContext, conn, entry: dict) -> dict:
    """A worker's queue entry with the queue's current name, length and next task."""
    E = t.queue_entries
    doc = ctx.store.get(conn, t.queues, entry["id"])
    heads = conn.execute(select(E.c.task).where(E.c.queue == entry["id"]).order_by(E.c.position, E.c.seq)).scalars()
    waiting = list(heads)
    fresh = {**entry, "num_tasks": len(waiting)}
    if doc is not None:
        fresh.update({"name": doc["name"], "display_name": doc.get("display_name") or doc["name"]})
    if waiting:
        head = ctx.store.get(conn, t.tasks, waiting[0])
        fresh["next_task"] = {"id": waiting[0], "name": head.get("name") if head else None}
    return fresh


def _task_now(ctx: CallContext, conn, entry: dict) -> dict:
    """The running task's entry with its running time (ms) and last iteration."""
    doc = ctx.store.get(conn, t.tasks, entry["id"])
    if doc is None:
        return entry
    seconds = doc.get("active_duration") or 0
    if not seconds and doc.get("started") and doc.get("status") == TaskStatus.IN_PROGRESS:
        seconds = max(0.0, clock.now() - clock.parse_iso(doc["started"]))
    return {**entry, "running_time": int(seconds * 1000), "last_iteration": doc.get("last_iteration") or 0}


def _projected(ctx: CallContext, conn, worker: dict) -> dict:
    if isinstance(worker.get("queue"), dict):
        worker["queue"] = _queue_now(ctx, conn, worker["queue"])
    worker["queues"] = [_queue_now(ctx, conn, q) for q in worker.get("queues") or [] if isinstance(q, dict)]
    if isinstance(worker.get("task"), dict):
        worker["task"] = _task_now(ctx, conn, worker["task"])
    return worker


@endpoint("workers.get_all")
def get_all(ctx: CallContext, req: Request) -> dict:
    """The live workers, with their queues' current state and their task's running time."""
    schema.check(schema.REQUESTS["workers.get_all"], req.body)
    with ctx.store.tx() as conn:
        workers = live_workers(ctx, conn, req.integer("last_seen", GET_ALL_LAST_SEEN_S), req)
        return {"workers": [_projected(ctx, conn, w) for w in workers]}


@endpoint("workers.get_count")
def get_count(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["workers.get_count"], req.body)
    with ctx.store.tx() as conn:
        return {"count": len(live_workers(ctx, conn, req.integer("last_seen", 0), req))}


@endpoint("workers.get_metric_keys")
def get_metric_keys(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["workers.get_metric_keys"], req.body)
    with ctx.store.tx() as conn:
        found = worker_stats.metric_keys(conn, req.str_list("worker_ids"))
    return {"categories": [{"name": name, "metric_keys": keys} for name, keys in found.items()]}


@endpoint("workers.get_stats")
def get_stats(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["workers.get_stats"], req.body)
    with ctx.store.tx() as conn:
        return {"workers": worker_stats.stats(conn, req.body)}


@endpoint("workers.get_activity_report")
def get_activity_report(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["workers.get_activity_report"], req.body)
    with ctx.store.tx() as conn:
        return worker_stats.activity(conn, req.body)
