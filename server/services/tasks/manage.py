"""tasks.*: the table's bulk edits and lookups: get_types, move, validate, update_tags,
make_public / make_private (every task is already visible to every key of a single-tenant
server, so these change nothing and say so with `updated: 0`); update_batch (tasks.update once per
JSON line, every line checked before any is applied)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from sqlalchemy import select

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.projects.crud import find_or_create_project, get_project
from server.services.tasks import crud
from server.services.tasks import doc as taskdoc
from server.storage import tables as t
from shipyard.protocol import TaskType

MAX_IDS = 1000


def _ids(req: Request, key: str = "ids") -> list[str]:
    ids = req.str_list(key) or []
    if not ids:
        raise errors.missing_field(key)
    if len(ids) > MAX_IDS:
        raise errors.validation(f"field '{key}' holds at most {MAX_IDS} task ids")
    return list(dict.fromkeys(ids))


def _each(ctx: CallContext, ids: list[str], change: Callable[[dict], bool]) -> int:
    """Load every task first (an unknown id fails the call before anything changes), then
    apply `change(doc)` and save the ones it changed; returns how many changed."""
    updated = 0
    with ctx.store.tx() as conn:
        docs = [taskdoc.load(ctx, conn, task_id) for task_id in ids]
        for doc in docs:
            if change(doc):
                taskdoc.touch(ctx, doc)
                ctx.store.save(conn, t.tasks, doc)
                updated += 1
    return updated


@endpoint("tasks.get_types")
def get_types(ctx: CallContext, req: Request) -> dict:
    projects = req.str_list("projects") or []
    query = select(t.tasks.c.type).distinct()
    if projects:
        query = query.where(t.tasks.c.project.in_(projects))
    with ctx.store.tx() as conn:
        types = sorted(row[0] for row in conn.execute(query) if row[0])
    return {"types": types}


def _target_project(ctx: CallContext, conn, req: Request) -> str | None:
    name = req.text("project_name")
    if name:
        return find_or_create_project(ctx, conn, name)
    if "project" not in req.body:
        raise errors.missing_field("project", "project_name")
    project = req.text("project")
    if project:
        get_project(ctx, conn, project)
    return project or None


@endpoint("tasks.move")
def move(ctx: CallContext, req: Request) -> dict:
    ids = _ids(req)
    with ctx.store.tx() as conn:
        project = _target_project(ctx, conn, req)
    _each(ctx, ids, lambda doc: _set(doc, "project", project))
    return {"project_id": project}


def _set(doc: dict, key: str, value: Any) -> bool:
    if doc.get(key) == value:
        return False
    doc[key] = value
    return True


@endpoint("tasks.update_tags")
def update_tags(ctx: CallContext, req: Request) -> dict:
    ids = _ids(req)
    add = req.str_list("add_tags") or []
    remove = set(req.str_list("remove_tags") or [])

    def change(doc: dict) -> bool:
        tags = [tag for tag in dict.fromkeys([*(doc.get("tags") or []), *add]) if tag not in remove]
        return _set(doc, "tags", tags)

    return {"updated": _each(ctx, ids, change)}


@endpoint("tasks.validate")
def validate(ctx: CallContext, req: Request) -> dict:
    """What tasks.create would refuse, refused the same way; nothing is stored."""
    req.text("name", required=True)
    kind = req.text("type", required=True)
    if kind not in list(TaskType):
        raise errors.validation(f"field 'type' must be one of {', '.join(TaskType)}, got {kind!r}")
    fields = crud.incoming_fields(ctx, req, [])
    with ctx.store.tx() as conn:
        if fields.get("project"):
            get_project(ctx, conn, fields["project"])
        parent = fields.get("parent")
        if parent and ctx.store.get(conn, t.tasks, parent) is None:
            raise errors.invalid_id("task", parent)
    schema.check(schema.TASK, fields)
    return {}


def _visibility(ctx: CallContext, req: Request) -> dict:
    ids = req.str_list("ids") or []
    with ctx.store.tx() as conn:
        for task_id in ids:
            taskdoc.load(ctx, conn, task_id)
    return {"updated": 0}


@endpoint("tasks.make_public")
def make_public(ctx: CallContext, req: Request) -> dict:
    return _visibility(ctx, req)


@endpoint("tasks.make_private")
def make_private(ctx: CallContext, req: Request) -> dict:
    return _visibility(ctx, req)


def _batch_lines(ctx: CallContext, req: Request) -> list[Request]:
    """The tasks.update requests of a tasks.update_batch body (JSON lines, or a JSON list), each
    checked before any is applied: an object naming its `task`, with the task fields' types."""
    lines = req.body.get("__lines__")
    if not lines:
        raise errors.validation("tasks.update_batch takes JSON lines (Content-Type: application/json-lines), "
                                "one tasks.update request per line, each naming its 'task'")
    if len(lines) > MAX_IDS:
        raise errors.validation(f"tasks.update_batch takes at most {MAX_IDS} lines")
    for number, line in enumerate(lines, 1):
        if not isinstance(line, dict) or not isinstance(line.get("task"), str) or not line["task"]:
            raise errors.validation(f"line {number}: field 'task' must be a task id")
    updates = [Request(dict(line)) for line in lines]
    for update in updates:
        crud.incoming_fields(ctx, update, [])
    with ctx.store.tx() as conn:
        for line in lines:
            taskdoc.load(ctx, conn, line["task"])
    return updates


@endpoint("tasks.update_batch")
def update_batch(ctx: CallContext, req: Request) -> dict:
    updates = _batch_lines(ctx, req)
    update_ctx = replace(ctx, endpoint="tasks.update")
    return {"updated": sum(crud.edit(update_ctx, line)["updated"] for line in updates)}
