"""projects.* endpoints: create, read, update, and the naming rules of project paths.

A project's name is its path: "a/b/c" is project "c" (its `basename`) under "a/b" under "a".
Creating "a/b/c" creates "a" and "a/b" on the way; `parent` is the direct parent's id and
`path` the ids of all its ancestors, top first. Moving, merging and deleting whole subtrees is
in `project_tree`, statistics in `project_stats`, the distinct-values queries in `project_queries`.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server import errors, query
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.storage import tables as t
from server.storage.store import new_id
from shipyard import clock
from shipyard.protocol import Subcode

MAX_DEPTH = 10  # as the reference server's services.projects.sub_projects.max_depth


def check_request(endpoint_name: str, req: Request) -> None:
    """A 400 naming the first field of the body that does not match the endpoint's spec."""
    schema.check(schema.REQUESTS[endpoint_name], req.body)


def get_project(ctx: CallContext, conn, project_id: str) -> dict:
    doc = ctx.store.get(conn, t.projects, project_id)
    if doc is None:
        raise errors.invalid_id("project", project_id)
    return doc


def normalize_name(name: str) -> str:
    """"a//b/ " -> "a/b": a project name is a '/'-separated path of non-blank parts."""
    return "/".join(part.strip() for part in name.split("/") if part.strip())


def checked_name(name: str) -> str:
    """The normalized name, or 400/407 when nothing is left ("/", " / ") and 400/409 when the
    path is deeper than MAX_DEPTH."""
    clean = normalize_name(name)
    if not clean:
        raise errors.APIError(400, Subcode.INVALID_PROJECT_NAME, f"Invalid project name: name={name!r}")
    check_depth(clean.count("/") + 1)
    return clean


def check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise errors.APIError(400, Subcode.PROJECT_PATH_EXCEEDS_MAX,
                              f"Project path exceeds the maximum allowed depth: max_depth={MAX_DEPTH}")


def name_taken(name: str) -> errors.APIError:
    return errors.APIError(400, Subcode.PROJECT_NAME_TAKEN,
                           f"Project with the same name already exists: name={name}")


def find_by_name(conn, name: str) -> dict | None:
    row = conn.execute(select(t.projects.c.doc).where(t.projects.c.name == name)).first()
    return dict(row[0]) if row else None


def find_or_create_project(ctx: CallContext, conn, name: str) -> str:
    name = normalize_name(name)
    if not name:
        raise errors.missing_field("name")
    found = find_by_name(conn, name)
    return found["id"] if found else _insert(ctx, conn, {"name": name})


def ensure_project(ctx: CallContext, conn, name: str) -> dict | None:
    """The project named `name`, created with its parents if missing; None for the top level ("")."""
    name = normalize_name(name)
    if not name:
        return None
    return find_by_name(conn, name) or get_project(ctx, conn, _insert(ctx, conn, {"name": name}))


def descendants(ctx: CallContext, conn, project_id: str) -> list[dict]:
    """Every project below `project_id`, at any depth."""
    return [d for d in ctx.store.get_many(conn, t.projects) if project_id in (d.get("path") or [])]


def place_under(doc: dict, parent: dict | None) -> None:
    doc["parent"] = parent["id"] if parent else None
    doc["path"] = [*(parent.get("path") or []), parent["id"]] if parent else []


def _insert(ctx: CallContext, conn, fields: dict) -> str:
    """Insert a project; like the reference server, the projects on its path ("a" and "a/b" for
    "a/b/c") are created as needed, and `parent`/`path` link it to them."""
    now = clock.iso()
    name = fields["name"]
    parent = ensure_project(ctx, conn, name.rpartition("/")[0])
    if parent:
        parent["last_update"] = now
        ctx.store.save(conn, t.projects, parent)
    doc: dict[str, Any] = {
        "id": new_id(), "name": name, "basename": name.rsplit("/", 1)[-1],
        "description": fields.get("description") or "", "tags": fields.get("tags") or [],
        "system_tags": fields.get("system_tags") or [],
        "default_output_destination": fields.get("default_output_destination"),
        "user": ctx.identity.user, "company": ctx.identity.company, "created": now, "last_update": now}
    place_under(doc, parent)
    ctx.store.insert(conn, t.projects, {k: v for k, v in doc.items() if v is not None})
    return doc["id"]


@endpoint("projects.create")
def create(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.PROJECT, {k: req.body.get(k) for k in schema.PROJECT.fields})
    name = checked_name(req.text("name", required=True))
    with ctx.store.tx() as conn:
        if find_by_name(conn, name):
            raise name_taken(name)
        return {"id": _insert(ctx, conn, {"name": name, "description": req.text("description"),
                                          "tags": req.str_list("tags"),
                                          "system_tags": req.str_list("system_tags"),
                                          "default_output_destination": req.text("default_output_destination")})}


@endpoint("projects.get_by_id")
def get_by_id(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        return {"project": get_project(ctx, conn, req.id("project", "project"))}


def listed(ctx: CallContext, req: Request) -> list[dict]:
    """The projects a get_all request selects by `id` and `parent`, before query.apply."""
    ids = req.str_list("id")
    where = [t.projects.c.id.in_(ids)] if ids else []
    with ctx.store.tx() as conn:
        docs = ctx.store.get_many(conn, t.projects, where)
    # As the reference server: `parent` matches any ancestor, or only the direct parent with
    # shallow_search, which alone restricts the listing to top-level projects.
    parents = set(req.str_list("parent") or [])
    shallow = req.flag("shallow_search")
    if parents and shallow:
        return [d for d in docs if d.get("parent") in parents]
    if parents:
        return [d for d in docs if parents.intersection(d.get("path") or [])]
    return [d for d in docs if not d.get("parent")] if shallow else docs


@endpoint("projects.get_all")
def get_all(ctx: CallContext, req: Request) -> dict:
    return {"projects": query.apply(listed(ctx, req), req.body, default_order="name")}


def _rename(ctx: CallContext, conn, doc: dict, new_name: str) -> None:
    """Rename within the same location (moving is projects.move), its subprojects with it."""
    new = checked_name(new_name)
    old = doc["name"]
    if new.rpartition("/")[0] != old.rpartition("/")[0]:
        raise errors.APIError(400, Subcode.CANNOT_UPDATE_PROJECT_LOCATION,
                              f"Cannot update project location, use projects.move: name={new}")
    if new != old and find_by_name(conn, new):
        raise name_taken(new)
    for child in descendants(ctx, conn, doc["id"]):
        child["name"] = new + child["name"][len(old):]
        child["last_update"] = clock.iso()
        ctx.store.save(conn, t.projects, child)
    doc["name"], doc["basename"] = new, new.rsplit("/", 1)[-1]


@endpoint("projects.update")
def update_project(ctx: CallContext, req: Request) -> dict:
    with ctx.store.tx() as conn:
        doc = get_project(ctx, conn, req.id("project", "project"))
        schema.check(schema.PROJECT, {k: req.body.get(k) for k in schema.PROJECT.fields})
        fields = {key: req.text(key) for key in ("description", "default_output_destination") if key in req}
        fields.update({key: req.str_list(key) for key in ("tags", "system_tags") if key in req})
        if "name" in req:
            _rename(ctx, conn, doc, req.text("name"))
            fields["name"] = doc["name"]
        doc.update(fields)
        doc["last_update"] = clock.iso()
        ctx.store.save(conn, t.projects, doc)
    return {"updated": 1, "fields": fields}


@endpoint("projects.make_public")
@endpoint("projects.make_private")
def make_public(ctx: CallContext, req: Request) -> dict:
    """A single-tenant server has no other company to share with: every project is already
    visible to every user, so this only counts the projects it was asked about."""
    check_request(ctx.endpoint, req)
    ids = req.str_list("ids") or []
    with ctx.store.tx() as conn:
        found = ctx.store.get_many(conn, t.projects, [t.projects.c.id.in_(ids)]) if ids else []
    return {"updated": len(found)}
