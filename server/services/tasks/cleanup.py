"""What deleting or resetting a task leaves behind, and tidying it.

A task's draft output models go with it (unless `delete_output_models=false`); its published
ones stay, detached from it. The files the task uploaded are not the server's to delete (they
live in the caller's storage): with `return_file_urls` the answer lists them, as `urls`
{model_urls, event_urls, artifact_urls}, so the caller (the SDK's Task.delete) removes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete as sql_delete
from sqlalchemy import select

from server.rpc.registry import CallContext, Request
from server.services.events.store import IMAGE
from server.services.tasks import doc as taskdoc
from server.storage import tables as t
from shipyard import clock


@dataclass
class Outcome:
    deleted_models: int = 0
    updated_models: int = 0
    urls: dict[str, list[str]] = field(default_factory=dict)

    def answer(self, req: Request) -> dict:
        """The fields every delete/reset answer carries; `urls` only when asked for."""
        out: dict = {"deleted_models": self.deleted_models}
        if req.flag("return_file_urls"):
            out["urls"] = self.urls
        return out


def _output_models(ctx: CallContext, conn, doc: dict) -> list[dict]:
    """The models the task made: those naming it as their task, and its registered outputs."""
    found = {m["id"]: m for m in ctx.store.get_many(conn, t.models, [t.models.c.task == doc["id"]])}
    listed = [m.get("model") for m in (doc.get("models") or {}).get("output") or [] if isinstance(m, dict)]
    missing = [i for i in listed if isinstance(i, str) and i not in found]
    if missing:
        found.update({m["id"]: m for m in ctx.store.get_many(conn, t.models, [t.models.c.id.in_(missing)])})
    return list(found.values())


def _event_urls(conn, task_id: str) -> list[str]:
    query = select(t.events.c.doc).where(t.events.c.task == task_id, t.events.c.type == IMAGE)
    urls = {row[0].get("url") for row in conn.execute(query) if isinstance(row[0], dict)}
    return sorted(u for u in urls if isinstance(u, str) and u)


def _artifact_urls(doc: dict) -> list[str]:
    arts = taskdoc.artifacts(doc.get("execution"))
    return sorted({a["uri"] for a in arts if a.get("mode", "output") == "output" and isinstance(a.get("uri"), str)
                   and a["uri"]})


def tidy_outputs(ctx: CallContext, conn, doc: dict, req: Request) -> Outcome:
    """Delete the task's draft output models (unless asked not to), detach its published ones,
    and collect the urls of what it uploaded. Call before its events are deleted."""
    models = _output_models(ctx, conn, doc)
    drafts = [m for m in models if not m.get("ready")]
    published = [m for m in models if m.get("ready")]
    outcome = Outcome(urls={"model_urls": sorted({m["uri"] for m in drafts if m.get("uri")}),
                            "event_urls": _event_urls(conn, doc["id"]), "artifact_urls": _artifact_urls(doc)})
    if req.flag("delete_output_models", True) and drafts:
        ids = [m["id"] for m in drafts]
        conn.execute(sql_delete(t.models).where(t.models.c.id.in_(ids)))
        outcome.deleted_models = len(ids)
    else:
        published += drafts
    for model in published:
        if model.get("task") == doc["id"]:
            model.update({"task": None, "last_update": clock.iso()})
            ctx.store.save(conn, t.models, model)
            outcome.updated_models += 1
    return outcome
