"""models.*: the model registry the clearml SDK's OutputModel / InputModel / Model use.

A model document: {id, name, user, company, created, last_update, task, project, uri, framework,
design, labels, ready, tags, system_tags, comment, parent, metadata}. `ready` is ClearML's
"published" flag. `metadata` is {key: {key, type, value}}.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Text, cast, select

from server import errors, query
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services import scroll
from server.services.events import json_safe
from server.services.projects.crud import get_project
from server.services.tasks import doc as taskdoc
from server.services.tasks import ex
from server.storage import tables as t
from server.storage.store import new_id
from shipyard import clock
from shipyard.protocol import Subcode, TaskStatus

_UPDATE_FOR_TASK_FIELDS = ("uri", "name", "comment", "tags", "system_tags")


def load(ctx: CallContext, conn, model_id: Any) -> dict:
    doc = ctx.store.get(conn, t.models, model_id) if isinstance(model_id, str) and model_id else None
    if doc is None:
        raise errors.invalid_id("model", model_id)
    return doc


def _metadata(value: Any) -> dict[str, dict]:
    """Metadata as {key: {key, type, value}} from that form or a list of {key, type, value}."""
    items = value.values() if isinstance(value, dict) else value
    out: dict[str, dict] = {}
    for item in items or ():
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"]:
            raise errors.validation("each metadata item must be an object with a non-empty 'key'")
        out[item["key"]] = {"key": item["key"], "type": item.get("type"), "value": item.get("value")}
    return out


def _incoming(ctx: CallContext, conn, req: Request, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The model fields present in the request, type-checked, with references verified."""
    fields = {key: req.body[key] for key in schema.MODEL.fields
              if (names is None or key in names) and req.body.get(key) is not None}
    schema.check(schema.MODEL, fields)
    if isinstance(fields.get("design"), str):
        fields["design"] = {"design": fields["design"]}
    if "metadata" in fields:
        fields["metadata"] = _metadata(fields["metadata"])
    fields = json_safe(fields)  # NaN/inf inside design/labels/metadata: JSON columns refuse them
    if fields.get("project"):
        get_project(ctx, conn, fields["project"])
    if fields.get("task"):
        taskdoc.load(ctx, conn, fields["task"])
    if fields.get("parent"):
        load(ctx, conn, fields["parent"])
    return fields


def _new_doc(ctx: CallContext, fields: dict[str, Any]) -> dict:
    now = clock.iso()
    doc: dict[str, Any] = {
        "id": new_id(), "name": "", "user": ctx.identity.user, "company": ctx.identity.company,
        "created": now, "last_update": now, "uri": "", "framework": "", "design": {}, "labels": {},
        "ready": False, "tags": [], "system_tags": [], "comment": "", "metadata": {},
    }
    doc.update(fields)
    return doc


def touch(doc: dict) -> None:
    doc["last_update"] = clock.iso()


@endpoint("models.create")
def create(ctx: CallContext, req: Request) -> dict:
    name = req.text("name", required=True)
    if not name.strip():
        raise errors.missing_field("name")
    with ctx.store.tx() as conn:
        doc = _new_doc(ctx, _incoming(ctx, conn, req))
        ctx.store.insert(conn, t.models, doc)
    return {"id": doc["id"], "created": True}


@endpoint("models.get_by_id")
def get_by_id(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        return {"model": load(ctx, conn, req.id("model", "model"))}


@endpoint("models.get_by_task_id")
def get_by_task_id(ctx: CallContext, req: Request) -> dict:
    """The task's (last registered) output model."""
    with ctx.store.tx() as conn:
        task = taskdoc.load(ctx, conn, req.id("task", "task"))
        outputs = (task.get("models") or {}).get("output") or []
        for entry in reversed(outputs):
            doc = ctx.store.get(conn, t.models, entry.get("model") or "")
            if doc is not None:
                return {"model": doc}
        docs = ctx.store.get_many(conn, t.models, [t.models.c.task == task["id"]])
    if not docs:
        raise errors.APIError(400, Subcode.INVALID_MODEL_ID, f"No output model for task: task={task['id']}")
    return {"model": max(docs, key=lambda d: d.get("created") or "")}


def _with_stats(docs: list[dict]) -> list[dict]:
    return [{**doc, "stats": {"labels_count": len(doc.get("labels") or {})}} for doc in docs]


# The models' references the _ex answers join (`task.name` -> `task: {id, name}`, ...)
EX_REFS = {"project": t.projects, "task": t.tasks, "parent": t.models}


@endpoint("models.get_all_ex")
def get_all_ex(ctx: CallContext, req: Request) -> dict:
    """get_all for the web UI: `scroll_id`/`size` paging, references joined as objects and
    `user`/`company` as {id, name} (as tasks.get_all_ex answers); with include_stats each model
    carries `stats` ({labels_count})."""
    schema.check(schema.REQUESTS["models.get_all_ex"], req.body)
    page = scroll.window(ctx, req)
    docs = _selected(ctx, req, None if page is None else (page.start, page.size))
    models = ex.join(ctx, docs, req.body.get("only_fields"), EX_REFS)
    if req.flag("include_stats"):
        models = _with_stats(models)
    if page is None:
        return {"models": models}
    return {"models": models, "scroll_id": scroll.advance(ctx, page, len(models))}


@endpoint("models.get_by_id_ex")
def get_by_id_ex(ctx: CallContext, req: Request) -> dict:
    if not req.raw("id"):
        raise errors.missing_field("id")
    return {"models": ex.join(ctx, _selected(ctx, req, None), req.body.get("only_fields"), EX_REFS)}


@endpoint("models.get_all")
def get_all(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS["models.get_all"], req.body)  # only_fields is projected here, not in query.apply
    only = req.body.get("only_fields")
    return {"models": [query.project_fields(d, [only] if isinstance(only, str) else only)
                       for d in _selected(ctx, req, None)]}


def _selected(ctx: CallContext, req: Request, window: tuple[int, int] | None) -> list[dict]:
    """The models a get_all request asks for, filtered, ordered and paged, not yet projected."""
    where = []
    for column, key in ((t.models.c.id, "id"), (t.models.c.project, "project"), (t.models.c.task, "task")):
        values = req.array(key)
        if values:
            where.append(column.in_([str(v) for v in values]))
    where += query.time_clauses(req.body, {"last_update": t.models.c.last_update})
    with ctx.store.tx() as conn:
        docs = ctx.store.get_many(conn, t.models, where)
    if "ready" in req and req.raw("ready") is not None:
        ready = req.flag("ready")
        docs = [d for d in docs if bool(d.get("ready")) == ready]
    for key in ("framework", "user", "uri"):
        values = req.array(key)
        if values:
            wanted = {str(v) for v in values}
            docs = [d for d in docs if d.get(key) in wanted]
    body = {k: v for k, v in req.body.items() if k != "only_fields"}
    if window is not None and not body.get("order_by"):
        body["order_by"] = ["created"]
    return query.apply(docs, body, window=window)


def _edit(ctx: CallContext, req: Request) -> dict:
    model_id = req.id("model", "model")
    with ctx.store.tx() as conn:
        doc = load(ctx, conn, model_id)
        fields = _incoming(ctx, conn, req)
        if "metadata" in fields:  # merged by key; design, labels and the rest are replaced
            fields["metadata"] = {**(doc.get("metadata") or {}), **fields["metadata"]}
        changed = {k: v for k, v in fields.items() if doc.get(k) != v}
        if changed:
            doc.update(changed)
            touch(doc)
            ctx.store.save(conn, t.models, doc)
    return {"updated": 1 if changed else 0, "fields": changed}


@endpoint("models.edit")
def edit(ctx: CallContext, req: Request) -> dict:
    return _edit(ctx, req)


@endpoint("models.update")
def update(ctx: CallContext, req: Request) -> dict:
    return _edit(ctx, req)


def _register_output(ctx: CallContext, task: dict, model: dict) -> None:
    """Record `model` as an output model of `task` (task.models.output, keyed by name)."""
    models = {"input": [], "output": [], **(task.get("models") or {})}
    entry = {"name": model.get("name") or "", "model": model["id"], "updated": clock.iso()}
    output = [m for m in models["output"] if m.get("model") != model["id"] and m.get("name") != entry["name"]]
    models["output"] = output + [entry]
    task["models"] = models
    taskdoc.touch(ctx, task)


@endpoint("models.update_for_task")
def update_for_task(ctx: CallContext, req: Request) -> dict:
    """Create or update the task's output model and register it with the task.

    With `override_model_id` that existing model becomes the task's output model. Otherwise
    the task's registered output model (by `name`, else the latest one) is updated when it is
    not yet published; a new model is created when there is none or it is published."""
    task_id = req.id("task", "task")
    override = req.text("override_model_id")
    iteration = req.integer("iteration")
    with ctx.store.tx() as conn:
        task = taskdoc.load(ctx, conn, task_id)
        if task.get("status") == TaskStatus.PUBLISHED:
            raise errors.invalid_status(f"Cannot update the output model of a published task: task={task_id}")
        fields = _incoming(ctx, conn, req, _UPDATE_FOR_TASK_FIELDS)
        if iteration is not None:
            fields["last_iteration"] = iteration
            # as the reference server does: the task's own last_iteration grows with it
            task["last_iteration"] = max(int(task.get("last_iteration") or 0), iteration)
        created = False
        if override:
            model = load(ctx, conn, override)
            updated = 0
        else:
            current = _current_output(ctx, conn, task, fields.get("name"))
            if current is None or current.get("ready"):
                if not fields.get("uri"):
                    raise errors.missing_field("uri")
                execution = task.get("execution") or {}
                model = _new_doc(ctx, {
                    "name": task.get("name") or "", "task": task_id, "project": task.get("project"),
                    "framework": execution.get("framework") or "",
                    "labels": execution.get("model_labels") or {},
                    "design": {"design": execution["model_desc"]} if isinstance(execution.get("model_desc"), str)
                    else execution.get("model_desc") or {},
                    **fields})
                model = {k: v for k, v in model.items() if v is not None}
                ctx.store.insert(conn, t.models, model)
                created, updated = True, 0
            else:
                model = current
                changed = {k: v for k, v in fields.items() if model.get(k) != v}
                model.update(changed)
                touch(model)
                ctx.store.save(conn, t.models, model)
                updated = 1
        _register_output(ctx, task, model)
        ctx.store.save(conn, t.tasks, task)
    return {"id": model["id"], "created": created, "updated": updated}


def _current_output(ctx: CallContext, conn, task: dict, name: str | None) -> dict | None:
    outputs = (task.get("models") or {}).get("output") or []
    candidates = [m for m in outputs if name and m.get("name") == name] or (outputs[-1:] if not name else [])
    for entry in reversed(candidates):
        doc = ctx.store.get(conn, t.models, entry.get("model") or "")
        if doc is not None:
            return doc
    return None


@endpoint("models.set_ready")
@endpoint("models.publish")
def set_ready(ctx: CallContext, req: Request) -> dict:
    """Publish a model (ready=true); with publish_task (default) also publish its task."""
    model_id = req.id("model", "model")
    publish_task = req.flag("publish_task", True)
    force_task = req.flag("force_publish_task")
    published_task = None
    with ctx.store.tx() as conn:
        doc = load(ctx, conn, model_id)
        updated = 0 if doc.get("ready") else 1
        if publish_task and doc.get("task"):
            task = ctx.store.get(conn, t.tasks, doc["task"])
            if task is not None and task.get("status") != TaskStatus.PUBLISHED:
                fields = taskdoc.change_status(ctx, conn, task, TaskStatus.PUBLISHED, force=force_task,
                                               reason="model published")
                published_task = {"id": task["id"], "data": {"updated": 1, "fields": fields}}
        if updated:
            doc["ready"] = True
            touch(doc)
            ctx.store.save(conn, t.models, doc)
    return {"updated": updated, "published_task": published_task}


DELETED_PREFIX = "__DELETED__"


def _tasks_using(conn, model_id: str) -> list[dict]:
    """Tasks that have the model among their input models (a text match narrows, the document decides)."""
    rows = conn.execute(select(t.tasks.c.doc).where(cast(t.tasks.c.doc, Text).contains(model_id))).scalars()
    return [doc for doc in rows
            if any(m.get("model") == model_id for m in ((doc.get("models") or {}).get("input") or []))]


def _rename_refs(entries: list[dict], model_id: str) -> list[dict]:
    return [{**m, "model": DELETED_PREFIX + model_id} if m.get("model") == model_id else m for m in entries]


def _release_inputs(ctx: CallContext, conn, model_id: str, force: bool) -> None:
    using = _tasks_using(conn, model_id)
    if using and not force:
        raise errors.APIError(400, Subcode.MODEL_IN_USE, f"Model is used by {len(using)} task(s) as an input model, "
                              f"use force=true to delete: model={model_id}")
    for task in using:
        task["models"] = {**task["models"], "input": _rename_refs(task["models"]["input"], model_id)}
        taskdoc.touch(ctx, task)
        ctx.store.save(conn, t.tasks, task)


def _release_creator(ctx: CallContext, conn, doc: dict, force: bool) -> None:
    """The creating task, if it exists: a published one keeps a marked entry (and needs force),
    another one forgets the model."""
    task = ctx.store.get(conn, t.tasks, doc["task"]) if doc.get("task") else None
    if task is None:
        return
    models = dict(task.get("models") or {})
    output = models.get("output") or []
    if task.get("status") == TaskStatus.PUBLISHED:
        if not force:
            raise errors.APIError(400, Subcode.MODEL_CREATING_TASK_EXISTS, "The task that created this model is "
                                  f"published, use force=true to delete: model={doc['id']} task={task['id']}")
        models["output"] = _rename_refs(output, doc["id"])
        task["output"] = {**(task.get("output") or {}), "error": f"model deleted on {clock.iso()}"}
    else:
        models["output"] = [m for m in output if m.get("model") != doc["id"]]
    task["models"] = models
    taskdoc.touch(ctx, task)
    ctx.store.save(conn, t.tasks, task)


@endpoint("models.delete")
def delete(ctx: CallContext, req: Request) -> dict:
    """Delete a model. As with the reference server, force is needed when tasks use it as an
    input model (400/205) or when the task that created it is published (400/206)."""
    schema.check(schema.REQUESTS["models.delete"], req.body)
    model_id = req.id("model", "model")
    force = req.flag("force")
    with ctx.store.tx() as conn:
        doc = load(ctx, conn, model_id)
        _release_inputs(ctx, conn, model_id, force)
        _release_creator(ctx, conn, doc, force)
        ctx.store.delete(conn, t.models, model_id)
    return {"deleted": True, "url": doc.get("uri") or None}


@endpoint("models.add_or_update_metadata")
def add_or_update_metadata(ctx: CallContext, req: Request) -> dict:
    items = req.array("metadata", required=True)
    schema.check(schema.request_field("models.add_or_update_metadata", "metadata"), items, "metadata")
    items = _metadata(items)
    with ctx.store.tx() as conn:
        doc = load(ctx, conn, req.id("model", "model"))
        base = {} if req.flag("replace_metadata") else dict(doc.get("metadata") or {})
        doc["metadata"] = {**base, **items}
        touch(doc)
        ctx.store.save(conn, t.models, doc)
    return {"updated": 1}


@endpoint("models.delete_metadata")
def delete_metadata(ctx: CallContext, req: Request) -> dict:
    keys: list[str] = req.str_list("keys") or []
    if not keys:
        raise errors.missing_field("keys")
    with ctx.store.tx() as conn:
        doc = load(ctx, conn, req.id("model", "model"))
        metadata = dict(doc.get("metadata") or {})
        removed = [key for key in keys if metadata.pop(key, None) is not None]
        if removed:
            doc["metadata"] = metadata
            touch(doc)
            ctx.store.save(conn, t.models, doc)
    return {"updated": 1 if removed else 0}


@endpoint("models.get_frameworks")
def get_frameworks(ctx: CallContext, req: Request) -> dict:
    projects: list[str] = req.str_list("projects") or []
    query_ = select(t.models.c.doc)
    if projects:
        query_ = query_.where(t.models.c.project.in_(projects))
    with ctx.store.tx() as conn:
        frameworks = {(row[0] or {}).get("framework") for row in conn.execute(query_)}
    return {"frameworks": sorted(f for f in frameworks if f)}
