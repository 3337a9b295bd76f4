"""Task lifecycle endpoints: status changes and their side effects (queue, times, reset)."""
from __future__ import annotations

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services import leases
from server.services.events import delete_task_events
from server.services.queues import crud as q
from server.services.tasks import cleanup
from server.services.tasks import doc as taskdoc
from server.storage import tables as t
from server.task_waits import WAITERS
from shipyard import clock
from shipyard.protocol import MAX_MESSAGES, SET_MESSAGES, STOP_REQUEST, Subcode, SystemTag, TaskStatus, can_transition


def _simple_change(ctx: CallContext, req: Request, new: str, extra_fn=None) -> dict:
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, req.id("task", "task"))
        leases.check_claim(doc, req.integer("attempt"), new)
        extra = extra_fn(doc) if extra_fn else {}
        fields = taskdoc.change_status(ctx, conn, doc, new, force=req.flag("force"),
                                       reason=req.text("status_reason"), message=req.text("status_message"),
                                       extra=extra)
    WAITERS.wake(doc["id"])   # after the commit: a waiting agent re-reads the new status
    return {"updated": 1, "fields": fields}


@endpoint("tasks.started")
def started(ctx: CallContext, req: Request) -> dict:
    def extra(doc: dict) -> dict:
        return {} if doc.get("started") else {"started": clock.iso()}

    result = _simple_change(ctx, req, TaskStatus.IN_PROGRESS, extra)
    return {"started": 1, **result}




@endpoint(SET_MESSAGES)
def set_messages(ctx: CallContext, req: Request) -> dict:
    """Status messages of leased claims, compare-and-set, in one transaction (shipyard.protocol.SET_MESSAGES):
    each is written only where the task is in progress under that `attempt` and its message is still
    `expect`; the rest are left as they are (a stop request or the node's own message wins)."""
    schema.check(schema.REQUESTS[SET_MESSAGES], req.body)
    items = {item["task"]: item for item in req.body["tasks"]}
    if len(items) > MAX_MESSAGES:
        raise errors.validation(f"field 'tasks' may hold at most {MAX_MESSAGES} tasks, got {len(items)}")
    updated = []
    with ctx.store.tx() as conn:
        for doc in ctx.store.get_many(conn, t.tasks, [t.tasks.c.id.in_(sorted(items))]) if items else ():
            item = items[doc["id"]]
            if (doc.get("status") != TaskStatus.IN_PROGRESS or doc.get("_attempt") != item["attempt"]
                    or not doc.get("_lease") or (doc.get("status_message") or "") != item["expect"]):
                continue
            doc["status_message"] = item["status_message"]
            taskdoc.touch(ctx, doc)
            if ctx.store.save(conn, t.tasks, doc, expect_status=TaskStatus.IN_PROGRESS):
                updated.append(doc["id"])
    for task_id in updated:
        WAITERS.wake(task_id)   # after the commit, as tasks.started does
    return {"updated": updated}


def _completed_time(doc: dict) -> dict:
    return {"completed": clock.iso()}


@endpoint("tasks.stopped")
def stopped(ctx: CallContext, req: Request) -> dict:
    return _simple_change(ctx, req, TaskStatus.STOPPED, _completed_time)


@endpoint("tasks.failed")
def failed(ctx: CallContext, req: Request) -> dict:
    return _simple_change(ctx, req, TaskStatus.FAILED, _completed_time)


@endpoint("tasks.completed")
def completed(ctx: CallContext, req: Request) -> dict:
    result = _simple_change(ctx, req, TaskStatus.COMPLETED, _completed_time)
    result["published"] = 0
    if req.flag("publish"):
        published = _publish(ctx, req, force=True, publish_model=True)
        result["published"] = published["updated"]
        result["fields"] = {**result["fields"], **published["fields"]}
    return result


@endpoint("tasks.close")
def close(ctx: CallContext, req: Request) -> dict:
    return _simple_change(ctx, req, TaskStatus.CLOSED)


def _publish(ctx: CallContext, req: Request, *, force: bool, publish_model: bool) -> dict:
    """Publish the task and, as the reference server does, its last output model (ready=true)."""
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, req.id("task", "task"))
        leases.check_fence(doc, req.integer("attempt"))
        outputs = (doc.get("models") or {}).get("output") or []
        model = ctx.store.get(conn, t.models, outputs[-1].get("model")) if publish_model and outputs else None
        if model is not None and not model.get("ready"):
            model.update({"ready": True, "last_update": clock.iso()})
            ctx.store.save(conn, t.models, model)
        fields = taskdoc.change_status(ctx, conn, doc, TaskStatus.PUBLISHED, force=force,
                                       reason=req.text("status_reason"), message=req.text("status_message"),
                                       extra={"published": clock.iso()})
    return {"updated": 1, "fields": fields}


@endpoint("tasks.publish")
def publish(ctx: CallContext, req: Request) -> dict:
    return {"committed_versions_results": [],
            **_publish(ctx, req, force=req.flag("force"), publish_model=req.flag("publish_model", True))}


def _resolve_queue(ctx: CallContext, conn, req: Request) -> str:
    queue_id = req.text("queue")
    if queue_id:
        return q.require_queue(conn, queue_id)
    name = req.text("queue_name")
    if name:
        return q.find_queue_by_name(conn, name) or q.create_queue(ctx, conn, name)
    for doc in ctx.store.get_many(conn, t.queues):
        if SystemTag.DEFAULT in (doc.get("system_tags") or []):
            return doc["id"]
    raise errors.APIError(400, Subcode.NO_DEFAULT_QUEUE, "No queue given and no default queue exists")


@endpoint("tasks.enqueue")
def enqueue(ctx: CallContext, req: Request) -> dict:
    task_id = req.id("task", "task")
    with ctx.store.tx() as conn:
        queue_id = _resolve_queue(ctx, conn, req)
        doc = taskdoc.load(ctx, conn, task_id)
        previous = doc.get("status") or TaskStatus.CREATED
        if not can_transition(previous, TaskStatus.QUEUED, force=req.flag("force")) \
                or previous == TaskStatus.QUEUED and not req.flag("force"):
            raise errors.invalid_status(f"Cannot enqueue a task in status '{previous}' "
                                        f"(reset it first or use force): task={task_id}")
        execution = {**(doc.get("execution") or {}), "queue": queue_id}
        system_tags = [x for x in doc.get("system_tags") or [] if x != SystemTag.DEVELOPMENT]
        q.remove_task_entries(conn, task_id)
        taskdoc.start_runs(doc)
        fields = taskdoc.change_status(
            ctx, conn, doc, TaskStatus.QUEUED, force=True, reason=req.text("status_reason"),
            message=req.text("status_message"),
            extra={"enqueue_status": previous, "execution": execution, "system_tags": system_tags})
        q.add_entry(conn, queue_id, task_id)
    if ctx.notifier:
        ctx.notifier.notify(queue_id)
    fields.pop("enqueue_status", None)
    return {"queued": 1, "updated": 1, "fields": fields}


@endpoint("tasks.dequeue")
def dequeue(ctx: CallContext, req: Request) -> dict:
    task_id = req.id("task", "task")
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        current = doc.get("status")
        if current not in (TaskStatus.QUEUED, TaskStatus.IN_PROGRESS):
            return {"dequeued": 0, "updated": 0, "fields": {}}
        removed = q.remove_task_entries(conn, task_id)
        new = req.text("new_status") or doc.get("enqueue_status") or TaskStatus.CREATED
        if new not in list(TaskStatus):

            raise errors.validation(f"invalid new_status '{new}'")
        execution = {**(doc.get("execution") or {})}
        fields = taskdoc.change_status(ctx, conn, doc, new, force=True, reason=req.text("status_reason"),
                                       message=req.text("status_message"), extra={"execution": execution})
    return {"dequeued": 1 if removed or current == TaskStatus.QUEUED else 0, "updated": 1, "fields": fields}


def dequeue_if_queued(ctx: CallContext, task_id: str) -> None:
    """Archiving a queued task takes it out of its queue first (as the reference server does),
    so no agent picks up a task nobody sees any more."""
    with ctx.store.tx() as conn:
        doc = ctx.store.get(conn, t.tasks, task_id)
        queued = doc is not None and doc.get("status") == TaskStatus.QUEUED
    if queued:
        dequeue(ctx, Request({"task": task_id, "status_reason": "archived"}))


def _has_live_worker(ctx: CallContext, doc: dict) -> bool:
    if not doc.get("last_worker"):
        return False
    report = doc.get("last_worker_report") or doc.get("last_update")
    timeout = ctx.settings.worker_timeout_s if ctx.settings else 600.0
    if not isinstance(report, str):  # no report time at all: nobody to wait for (parse_iso(None) raised)
        return False
    try:
        return clock.now() - clock.parse_iso(report) < timeout
    except (TypeError, ValueError):
        return False


@endpoint("tasks.stop")
def stop(ctx: CallContext, req: Request) -> dict:
    task_id = req.id("task", "task")
    user = ctx.identity.user_name or ctx.identity.user
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        current = doc.get("status")
        reason = req.text("status_reason") or "abort request"
        if current == TaskStatus.QUEUED:
            q.remove_task_entries(conn, task_id)
            fields = taskdoc.change_status(ctx, conn, doc, TaskStatus.STOPPED, force=True, reason=reason,
                                           message=f"Stopped by {user}", extra=_completed_time(doc))
        elif current == TaskStatus.IN_PROGRESS and _has_live_worker(ctx, doc) \
                and SystemTag.DEVELOPMENT not in (doc.get("system_tags") or []) and not req.flag("force"):
            doc["status_message"] = STOP_REQUEST
            doc["status_reason"] = reason
            taskdoc.touch(ctx, doc)
            ctx.store.save(conn, t.tasks, doc)
            fields = {"status": current, "status_message": STOP_REQUEST, "status_reason": reason}
        else:
            fields = taskdoc.change_status(ctx, conn, doc, TaskStatus.STOPPED, force=req.flag("force"),
                                           reason=reason, message=req.text("status_message") or f"Stopped by {user}",
                                           extra=_completed_time(doc))
    WAITERS.wake(task_id)   # after the commit: the agent running it hears the abort request now
    return {"updated": 1, "fields": fields}


_RESET_CLEARED = ("started", "completed", "published", "last_worker", "last_worker_report", "enqueue_status",
                  "_lease", "_attempt", "_run", "shipyard_attempts", "_log_hwm", "_exit")


@endpoint("tasks.reset")
def reset(ctx: CallContext, req: Request) -> dict:
    task_id = req.id("task", "task")
    force = req.flag("force")
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        if doc.get("status") == TaskStatus.PUBLISHED and not force:
            raise errors.invalid_status(f"Cannot reset a published task without force: task={task_id}")
        dequeued = q.remove_task_entries(conn, task_id)
        outcome = cleanup.tidy_outputs(ctx, conn, doc, req)
        deleted_events = delete_task_events(conn, task_id)
        for key in _RESET_CLEARED:
            doc.pop(key, None)
        old_execution: dict = doc["execution"] if isinstance(doc.get("execution"), dict) else {}
        execution = {k: v for k, v in old_execution.items() if k != "queue"}
        execution["artifacts"] = [a for a in taskdoc.artifacts(old_execution) if a.get("mode") == "input"]
        models = {**(doc["models"] if isinstance(doc.get("models"), dict) else {}), "output": []}
        extra = {"last_metrics": {}, "last_iteration": 0, "runtime": {}, "models": models,
                 "execution": execution, "active_duration": 0}
        if req.flag("clear_all"):
            extra.update({"execution": {}, "script": {}})
        fields = taskdoc.change_status(ctx, conn, doc, TaskStatus.CREATED, force=True,
                                       reason=req.text("status_reason") or "reset",
                                       message=req.text("status_message"), extra=extra)
    WAITERS.wake(task_id)
    return {"dequeued": {"removed": dequeued} if dequeued else {}, "events": {"deleted": deleted_events},
            "updated": 1, "fields": {"status": fields["status"]}, **outcome.answer(req)}


@endpoint("tasks.ping")
def ping(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, req.id("task", "task"))
        leases.check_fence(doc, req.integer("attempt"))
        taskdoc.touch(ctx, doc, change=False)
        ctx.store.save(conn, t.tasks, doc)
    return {}
