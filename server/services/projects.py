"""projects.* endpoints."""
from __future__ import annotations

from sqlalchemy import delete, select

from server import errors, query
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.storage import tables as t
from server.storage.store import new_id
from shipyard import clock
from shipyard.protocol import Subcode


def get_project(ctx: CallContext, conn, project_id: str) -> dict:
    doc = ctx.store.get(conn, t.projects, project_id)
    if doc is None:
        raise errors.invalid_id("project", project_id)
    return doc


def normalize_name(name: str) -> str:
    """"a//b/ " -> "a/b": a project name is a '/'-separated path of non-blank parts."""
    return "/".join(part.strip() for part in name.split("/") if part.strip())


def _find_by_name(conn, name: str) -> dict | None:
    row = conn.execute(select(t.projects.c.doc).where(t.projects.c.name == name)).first()
    return dict(row[0]) if row else None


def find_or_create_project(ctx: CallContext, conn, name: str) -> str:
    name = normalize_name(name)
    if not name:
        raise errors.missing_field("name")
    found = _find_by_name(conn, name)
    return found["id"] if found else _insert(ctx, conn, {"name": name})


def _insert(ctx: CallContext, conn, fields: dict) -> str:
    """Insert a project; like the reference server, the projects on its path ("a" and "a/b" for
    "a/b/c") are created as needed, and `parent`/`path` link it to them."""
    now = clock.iso()
    name = fields["name"]
    location = name.rpartition("/")[0]
    parent = None
    if location:
        parent = _find_by_name(conn, location) or get_project(ctx, conn, _insert(ctx, conn, {"name": location}))
        parent["last_update"] = now
        ctx.store.save(conn, t.projects, parent)
    doc = {"id": new_id(), "name": name, "basename": name.rsplit("/", 1)[-1],
           "description": fields.get("description") or "", "tags": fields.get("tags") or [],
           "system_tags": fields.get("system_tags") or [], "default_output_destination":
           fields.get("default_output_destination"), "user": ctx.identity.user,
           "company": ctx.identity.company, "created": now, "last_update": now,
           "parent": parent["id"] if parent else None,
           "path": [*(parent.get("path") or []), parent["id"]] if parent else []}
    ctx.store.insert(conn, t.projects, {k: v for k, v in doc.items() if v is not None})
    return doc["id"]


@endpoint("projects.create")
def create(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.PROJECT, {k: req.body.get(k) for k in schema.PROJECT.fields})
    name = normalize_name(req.text("name", required=True))
    if not name:
        raise errors.missing_field("name")
    with ctx.store.tx() as conn:
        if _find_by_name(conn, name):
            raise errors.APIError(400, Subcode.PROJECT_NAME_TAKEN,
                                  f"Project with the same name already exists: name={name}")
        return {"id": _insert(ctx, conn, {"name": name, "description": req.text("description"),
                                          "tags": req.str_list("tags"),
                                          "system_tags": req.str_list("system_tags"),
                                          "default_output_destination": req.text("default_output_destination")})}


@endpoint("projects.get_by_id")
def get_by_id(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        return {"project": get_project(ctx, conn, req.id("project", "project"))}


@endpoint("projects.get_all")
@endpoint("projects.get_all_ex")
def get_all(ctx: CallContext, req: Request) -> dict:
    ids = req.str_list("id")
    where = [t.projects.c.id.in_(ids)] if ids else []
    with ctx.store.tx() as conn:
        docs = ctx.store.get_many(conn, t.projects, where)
    # As the reference server: `parent` matches any ancestor, or only the direct parent with
    # shallow_search, which alone restricts the listing to top-level projects.
    parents = set(req.str_list("parent") or [])
    if parents and req.flag("shallow_search"):
        docs = [d for d in docs if d.get("parent") in parents]
    elif parents:
        docs = [d for d in docs if parents.intersection(d.get("path") or [])]
    elif req.flag("shallow_search"):
        docs = [d for d in docs if not d.get("parent")]
    return {"projects": query.apply(docs, req.body, default_order="name")}


@endpoint("projects.update")
def update_project(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        doc = get_project(ctx, conn, req.id("project", "project"))
        schema.check(schema.PROJECT, {k: req.body.get(k) for k in schema.PROJECT.fields})
        fields = {}
        for key in ("name", "description", "default_output_destination"):
            if key in req:
                fields[key] = req.text(key)
        for key in ("tags", "system_tags"):
            if key in req:
                fields[key] = req.str_list(key)
        doc.update(fields)
        if "name" in fields:
            doc["basename"] = fields["name"].rsplit("/", 1)[-1]
        doc["last_update"] = clock.iso()
        ctx.store.save(conn, t.projects, doc)
    return {"updated": 1, "fields": fields}


@endpoint("projects.delete")
def delete_project(ctx: CallContext, req: Request) -> dict:
    project_id = req.id("project", "project")
    force = req.flag("force")
    with ctx.store.tx() as conn:
        get_project(ctx, conn, project_id)
        task_ids = [r[0] for r in conn.execute(select(t.tasks.c.id).where(t.tasks.c.project == project_id))]
        if task_ids and not force:
            raise errors.APIError(400, Subcode.PROJECT_HAS_TASKS, f"Project has associated tasks: "
                                  f"{len(task_ids)} (use force=true to delete them too)")
        if req.flag("delete_contents", force):
            for task_id in task_ids:
                conn.execute(delete(t.events).where(t.events.c.task == task_id))
                conn.execute(delete(t.queue_entries).where(t.queue_entries.c.task == task_id))
            conn.execute(delete(t.tasks).where(t.tasks.c.project == project_id))
        ctx.store.delete(conn, t.projects, project_id)
    return {"deleted": 1, "disassociated_tasks": 0, "deleted_tasks": len(task_ids)}
