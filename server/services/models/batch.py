"""models.* over many ids: the batch operations ({delete,publish,archive,unarchive}_many), the
public flag (make_public / make_private), move and update_tags.

A batch never fails as a whole for one bad id: each id runs in its own transaction through the
single-model operation, and the answer lists what `succeeded` (with the operation's fields) and
what `failed` (the error's codes and message), as the reference server answers.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services import batch
from server.services.models import crud as models
from server.services.projects.crud import find_or_create_project, get_project
from server.storage import tables as t
from shipyard.protocol import Subcode, SystemTag

Single = batch.Single


def run_many(ctx: CallContext, req: Request, single: Single, shape: Callable[[dict], dict]) -> dict:
    """Call `single` once per id (as `model`) with the batch's other fields."""
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    return batch.each_id(ctx, req, single, field="model", shape=shape)


@endpoint("models.delete_many")
def delete_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, models.delete, lambda r: {"deleted": bool(r["deleted"]), "url": r.get("url")})


def _publish_one(ctx: CallContext, req: Request) -> dict:
    body = dict(req.body)
    if "publish_task" not in body and "publish_tasks" in body:  # the schema's name for the apimodel's field
        body["publish_task"] = body["publish_tasks"]
    return models.set_ready(dataclasses.replace(ctx, endpoint="models.publish"), Request(body))


@endpoint("models.publish_many")
def publish_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, _publish_one,
                    lambda r: {"updated": bool(r["updated"]), "published_task": r.get("published_task")})


def _set_archived(archived: bool) -> Single:
    def single(ctx: CallContext, req: Request) -> dict:
        with ctx.store.tx() as conn:
            doc = models.load(ctx, conn, req.body["model"])
            tags = [tag for tag in doc.get("system_tags") or [] if tag != SystemTag.ARCHIVED]
            if archived:
                tags.append(SystemTag.ARCHIVED)
            changed = tags != (doc.get("system_tags") or [])
            if changed:
                doc["system_tags"] = tags
                models.touch(doc)
                ctx.store.save(conn, t.models, doc)
        return {"changed": changed}
    return single


@endpoint("models.archive_many")
def archive_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, _set_archived(True), lambda r: {"archived": r["changed"]})


@endpoint("models.unarchive_many")
def unarchive_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, _set_archived(False), lambda r: {"unarchived": r["changed"]})


def _load_all(ctx: CallContext, conn, ids: list[str]) -> list[dict]:
    """The models, all of them: unknown ids are a 400/201 naming them."""
    docs = ctx.store.get_many(conn, t.models, [t.models.c.id.in_(ids)])
    missing = sorted(set(ids) - {d["id"] for d in docs})
    if missing:
        raise errors.APIError(400, Subcode.INVALID_MODEL_ID, f"Invalid model id: ids={missing}")
    return docs


def _public(ctx: CallContext, req: Request) -> dict:
    """Shipyard has one company: every model is already visible to every user of the server,
    so making models public or private changes nothing but is answered as the reference
    server answers (the number of models, 400/201 for unknown ids)."""
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    ids = req.str_list("ids") or []
    with ctx.store.tx() as conn:
        return {"updated": len(_load_all(ctx, conn, ids)) if ids else 0}


@endpoint("models.make_public")
def make_public(ctx: CallContext, req: Request) -> dict:
    return _public(ctx, req)


@endpoint("models.make_private")
def make_private(ctx: CallContext, req: Request) -> dict:
    return _public(ctx, req)


def _target_project(ctx: CallContext, conn, req: Request) -> str | None:
    if req.text("project_name"):
        return find_or_create_project(ctx, conn, req.text("project_name"))
    project = req.text("project")
    return get_project(ctx, conn, project)["id"] if project else None


@endpoint("models.move")
def move(ctx: CallContext, req: Request) -> dict:
    """Move models to a project (`project`, or `project_name`, created when missing; a null
    `project` is the root)."""
    schema.check(schema.REQUESTS["models.move"], req.body)
    if "project" not in req and not req.text("project_name"):
        raise errors.missing_field("project", "project_name")
    ids = batch.ids(req, "model")
    with ctx.store.tx() as conn:
        docs = _load_all(ctx, conn, ids)
        project = _target_project(ctx, conn, req)
        for doc in docs:
            doc["project"] = project
            models.touch(doc)
            ctx.store.save(conn, t.models, doc)
    return {"project_id": project}


def _retag(doc: dict, add: list[str], remove: set[str]) -> bool:
    tags = [tag for tag in doc.get("tags") or [] if tag not in remove]
    tags += [tag for tag in add if tag not in tags]
    changed = tags != (doc.get("tags") or [])
    doc["tags"] = tags
    return changed


@endpoint("models.update_tags")
def update_tags(ctx: CallContext, req: Request) -> dict:
    """Add and remove user tags on many models; `updated` counts the models that changed."""
    schema.check(schema.REQUESTS["models.update_tags"], req.body)
    ids = req.str_list("ids") or []
    add, remove = req.str_list("add_tags") or [], set(req.str_list("remove_tags") or [])
    updated = 0
    with ctx.store.tx() as conn:
        for doc in ctx.store.get_many(conn, t.models, [t.models.c.id.in_(ids)]) if ids else []:
            if _retag(doc, add, remove):
                models.touch(doc)
                ctx.store.save(conn, t.models, doc)
                updated += 1
    return {"updated": updated}
