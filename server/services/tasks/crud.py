"""tasks.*: create, read, edit, clone, delete, and the task's parts (params, artifacts, models)."""
from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import delete as sql_delete

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services import leases
from server.services.events import delete_task_events
from server.services.projects.crud import find_or_create_project, get_project
from server.services.tasks import cleanup, status
from server.services.tasks import doc as taskdoc
from server.storage import tables as t
from server.storage.store import new_id
from server.task_waits import WAITERS
from shipyard.protocol import Subcode, SystemTag, TaskStatus

_NOT_CLONED_TAGS = (SystemTag.DEVELOPMENT, SystemTag.ARCHIVED)  # tasks.clone drops them
_CREATE_FIELDS = ("name", "type", "comment", "parent", "project", "tags", "system_tags", "script",
                  "execution", "hyperparams", "configuration", "runtime", "container", "models",
                  "output")


def incoming_fields(ctx: CallContext, req: Request, warnings: list[str]) -> dict[str, Any]:
    """The task fields in the request, type-checked; credentials in a repository URL are
    removed (and the caller warned)."""
    fields = {k: req.body[k] for k in _CREATE_FIELDS if req.body.get(k) is not None}
    schema.check(schema.TASK, fields)
    if req.body.get("output_dest") is not None:
        fields.setdefault("output", {})["destination"] = req.text("output_dest")
    execution = fields.get("execution")
    if execution and execution.get("docker_cmd") and "container" not in fields:
        image, _, args = str(execution["docker_cmd"]).strip().partition(" ")
        fields["container"] = {"image": image, "arguments": args.strip()}
    if fields.get("script"):
        fields["script"] = taskdoc.scrub_repository(fields["script"], warnings)
    return fields


@endpoint("tasks.create")
def create(ctx: CallContext, req: Request) -> dict:
    name = req.text("name", required=True)
    req.text("type", required=True)
    warnings: list[str] = []
    fields = incoming_fields(ctx, req, warnings)
    task_id = new_id()
    with ctx.store.tx() as conn:
        if fields.get("project"):
            get_project(ctx, conn, fields["project"])
        doc = taskdoc.new_task_doc(ctx, task_id, {**fields, "name": name})
        ctx.store.insert(conn, t.tasks, doc)
    return _with_warnings({"id": task_id}, warnings)


def _with_warnings(data: dict, warnings: list[str]) -> dict:
    """`warnings` in the response data: clients that do not know the field ignore it."""
    return {**data, "warnings": warnings} if warnings else data


@endpoint("tasks.get_by_id")
def get_by_id(ctx: CallContext, req: Request) -> dict:
    # pipelined on PostgreSQL: BEGIN goes with the read, COMMIT with the pipeline's end (two
    # round trips instead of three; the hottest read of the SDK and the web page)
    with ctx.store.tx(pipelined=True) as conn:
        doc = taskdoc.load(ctx, conn, req.id("task", "task"))
    return {"task": taskdoc.public_view(ctx, doc)}


def _apply_edit(doc: dict, fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        if key in taskdoc.EMBEDDED and isinstance(doc.get(key), dict):
            merged = dict(doc[key])
            merged.update(value)
            doc[key] = merged
        else:
            doc[key] = value


@endpoint("tasks.edit")
@endpoint("tasks.update")
def edit(ctx: CallContext, req: Request) -> dict:
    task_id = req.id("task", "task")
    warnings: list[str] = []
    fields = incoming_fields(ctx, req, warnings)
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        leases.check_held(doc, req.integer("attempt"))   # an agent's edit of its claim (Shipyard's extension)
        taskdoc.require_editable(doc, req.flag("force") or ctx.endpoint == "tasks.update")
        if fields.get("project"):
            get_project(ctx, conn, fields["project"])
        _apply_edit(doc, fields)
        taskdoc.touch(ctx, doc)
        ctx.store.save(conn, t.tasks, doc)
    return _with_warnings({"updated": 1, "fields": fields}, warnings)


@endpoint("tasks.clone")
def clone(ctx: CallContext, req: Request) -> dict:
    source_id = req.id("task", "task")
    with ctx.store.tx() as conn:
        source = taskdoc.load(ctx, conn, source_id)
        execution = copy.deepcopy(source["execution"]) if isinstance(source.get("execution"), dict) else {}
        execution.pop("queue", None)
        execution["artifacts"] = [a for a in taskdoc.artifacts(execution) if a.get("mode") != "output"]
        execution.update(req.mapping("execution_overrides") or {})
        project = req.text("new_task_project") or source.get("project")
        if req.text("new_project_name"):
            project = find_or_create_project(ctx, conn, req.text("new_project_name"))
        fields = {
            "name": req.text("new_task_name") or source.get("name"),
            "comment": req.text("new_task_comment", source.get("comment") or ""),
            "type": source.get("type"), "project": project,
            "tags": req.str_list("new_task_tags", source.get("tags") or []),
            "system_tags": req.str_list("new_task_system_tags", [
                tag for tag in source.get("system_tags") or [] if tag not in _NOT_CLONED_TAGS]),
            "parent": req.text("new_task_parent") or source.get("parent") or source["id"],
            "script": taskdoc.scrub_repository(copy.deepcopy(source.get("script") or {}), []),
            "hyperparams": req.mapping("new_task_hyperparams", copy.deepcopy(source.get("hyperparams") or {})),
            "configuration": req.mapping("new_task_configuration",
                                      copy.deepcopy(source.get("configuration") or {})),
            "container": req.mapping("new_task_container", copy.deepcopy(source.get("container") or {})),
            "execution": execution,
            "runtime": inherited_request(source),
            "output": {"destination": (source.get("output") or {}).get("destination")}
            if (source.get("output") or {}).get("destination") else {},
            "models": {"input": req.array("new_task_input_models",
                                         copy.deepcopy((source.get("models") or {}).get("input") or [])),
                       "output": []},
        }
        schema.check(schema.TASK, fields)
        new_task = new_id()
        ctx.store.insert(conn, t.tasks, taskdoc.new_task_doc(ctx, new_task, fields))
    return {"id": new_task, "new_project": None}


def inherited_request(source: dict) -> dict:
    """A clone's (and so an HPO trial's) GPU memory request: the parent's measured peak, else the
    parent's own request (field names: agent/gpus/packing.py and agent/daemon/gpuwatch.py)."""
    runtime = source.get("runtime")
    if not isinstance(runtime, dict):
        return {}
    for key in ("gpu_memory_peak_mb", "gpu_memory_request_mb"):
        value = runtime.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return {"gpu_memory_request_mb": int(value)}
    return {}


@endpoint("tasks.delete")
def delete_task(ctx: CallContext, req: Request) -> dict:
    task_id = req.id("task", "task")
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        _require_deletable(doc, req.flag("force"))
        outcome = cleanup.tidy_outputs(ctx, conn, doc, req)
        removed = delete_task_events(conn, task_id)
        conn.execute(sql_delete(t.queue_entries).where(t.queue_entries.c.task == task_id))
        ctx.store.delete(conn, t.tasks, task_id)
    WAITERS.wake(task_id)   # after the commit: an agent still running it stops
    return {"deleted": True, "updated_children": 0, "updated_models": outcome.updated_models,
            "events": {"deleted": removed}, **outcome.answer(req)}


def _require_deletable(doc: dict, force: bool) -> None:
    """A running task, or a published one that is not archived, goes only with force (as on the
    reference server, whose published results are kept unless deleted on purpose)."""
    if force:
        return
    if doc.get("status") == TaskStatus.IN_PROGRESS:
        raise errors.invalid_status(f"Cannot delete a running task without force: task={doc['id']}")
    if doc.get("status") == TaskStatus.PUBLISHED and SystemTag.ARCHIVED not in (doc.get("system_tags") or []):
        raise errors.APIError(400, Subcode.TASK_CANNOT_BE_DELETED,
                              f"Cannot delete a published task without force=true: task={doc['id']}")


def set_system_tag(ctx: CallContext, ids: list[str], tag: str, present: bool) -> int:
    count = 0
    with ctx.store.tx() as conn:
        for task_id in ids:
            doc = taskdoc.load(ctx, conn, task_id)
            tags = [x for x in doc.get("system_tags") or [] if x != tag] + ([tag] if present else [])
            if tags != doc.get("system_tags"):
                doc["system_tags"] = tags
                taskdoc.touch(ctx, doc)
                ctx.store.save(conn, t.tasks, doc)
                count += 1
    return count


@endpoint("tasks.archive")
def archive(ctx: CallContext, req: Request) -> dict:
    ids = req.str_list("tasks") or []
    if not ids:
        raise errors.missing_field("tasks")
    for task_id in ids:
        status.dequeue_if_queued(ctx, task_id)
    return {"archived": set_system_tag(ctx, ids, SystemTag.ARCHIVED, True)}


def _edit_part(ctx: CallContext, req: Request, mutate, *, any_status: bool = False) -> dict:
    return taskdoc.edit(ctx, req.id("task", "task"), req.flag("force"), mutate, any_status=any_status)


@endpoint("tasks.set_requirements")
def set_requirements(ctx: CallContext, req: Request) -> dict:
    requirements = req.mapping("requirements", required=True)
    schema.check(schema.SCRIPT.fields["requirements"], requirements, "requirements")

    attempt = req.integer("attempt")

    def mutate(doc: dict) -> dict:
        leases.check_held(doc, attempt)
        doc["script"] = {**(doc.get("script") or {}), "requirements": requirements}
        return {"updated": 1, "fields": {"script.requirements": requirements}}

    return _edit_part(ctx, req, mutate, any_status=True)


def _items(ctx: CallContext, req: Request, key: str) -> list[dict]:
    """The request's list under `key`, checked against the endpoint's spec in server/schema.py."""
    items = req.array(key, required=True)
    schema.check(schema.request_field(ctx.endpoint, key), items, key)
    return items


def _upsert(items: list[dict], new: list[dict], key) -> list[dict]:
    index = {key(item): i for i, item in enumerate(items)}
    for item in new:
        if key(item) in index:
            items[index[key(item)]] = item
        else:
            index[key(item)] = len(items)
            items.append(item)
    return items


def _artifact_key(art: dict) -> tuple:
    return art.get("key"), art.get("mode") or "output"


@endpoint("tasks.add_or_update_artifacts")
def add_artifacts(ctx: CallContext, req: Request) -> dict:
    artifacts = _items(ctx, req, "artifacts")
    for art in artifacts:
        art.setdefault("mode", "output")

    def mutate(doc: dict) -> dict:
        # A running task reports its artifacts as it goes: the reference server allows drafts
        # and running tasks without force.
        taskdoc.require_editable(doc, req.flag("force") or doc.get("status") == TaskStatus.IN_PROGRESS)
        execution = dict(doc.get("execution") or {})
        execution["artifacts"] = _upsert(taskdoc.artifacts(execution), artifacts, _artifact_key)
        doc["execution"] = execution
        return {"updated": len(artifacts)}

    return _edit_part(ctx, req, mutate, any_status=True)


@endpoint("tasks.delete_artifacts")
def delete_artifacts(ctx: CallContext, req: Request) -> dict:
    wanted = {(a.get("key"), a.get("mode") or "output") for a in _items(ctx, req, "artifacts")}

    def mutate(doc: dict) -> dict:
        execution = dict(doc.get("execution") or {})
        before = taskdoc.artifacts(execution)
        execution["artifacts"] = [a for a in before if _artifact_key(a) not in wanted]
        doc["execution"] = execution
        return {"deleted": len(before) - len(execution["artifacts"])}

    return _edit_part(ctx, req, mutate)


@endpoint("tasks.add_or_update_model")
def add_model(ctx: CallContext, req: Request) -> dict:
    kind = req.text("type", required=True)
    if kind not in ("input", "output"):
        raise errors.validation("type must be 'input' or 'output'")
    entry = {"name": req.text("name", required=True), "model": req.text("model", required=True)}
    if req.integer("iteration") is not None:
        entry["updated"] = taskdoc.clock.iso()

    def mutate(doc: dict) -> dict:
        models = {"input": [], "output": [], **(doc.get("models") or {})}
        models[kind] = _upsert(list(models[kind]), [entry], lambda m: m.get("name"))
        doc["models"] = models
        return {"updated": 1}

    return _edit_part(ctx, req, mutate, any_status=True)


@endpoint("tasks.delete_models")
def delete_models(ctx: CallContext, req: Request) -> dict:
    wanted = {(m.get("name"), m.get("type")) for m in _items(ctx, req, "models")}

    def mutate(doc: dict) -> dict:
        models = {"input": [], "output": [], **(doc.get("models") or {})}
        for kind in ("input", "output"):
            models[kind] = [m for m in models[kind] if (m.get("name"), kind) not in wanted]
        doc["models"] = models
        return {"updated": 1}

    return _edit_part(ctx, req, mutate)
