"""organization.*: the one workspace of a single-tenant server.

    get_tags            the tags (and, asked for, system tags) of all tasks and models
    get_entities_count  how many projects, tasks, models, pipelines, datasets and reports match
                        each given get_all query (the web UI's search counts)
    get_user_companies  the one company, with its users as owners

Counts run the entities' own get_all handlers, so every filter they take counts the same way.
Pipelines and datasets are the projects the SDK marks with the `pipeline` / `dataset` system
tag, reports the tasks of type `report`.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from server import errors
from server.auth.keys import COMPANY
from server.rpc import registry
from server.rpc.registry import CallContext, Request, endpoint
from server.services.users import user_names
from server.storage import tables as t

# request field -> (the get_all that counts it, what it adds to the query, the answer's list)
_COUNTED: dict[str, tuple[str, dict[str, Any], str]] = {
    "projects": ("projects.get_all", {}, "projects"),
    "tasks": ("tasks.get_all", {}, "tasks"),
    "models": ("models.get_all", {}, "models"),
    "pipelines": ("projects.get_all", {"system_tags": ["pipeline"], "search_hidden": True}, "projects"),
    "datasets": ("projects.get_all", {"system_tags": ["dataset"], "search_hidden": True}, "projects"),
    "reports": ("tasks.get_all", {"type": ["report"], "search_hidden": True}, "tasks"),
}


def _tags_of(docs: list[dict], field: str, wanted: list[str] | None) -> set[str]:
    found: set[str] = set()
    for doc in docs:
        tags = [tag for tag in doc.get(field) or [] if isinstance(tag, str)]
        if wanted is None or set(wanted) & set(tags):
            found.update(tags)
    return found


@endpoint("organization.get_tags")
def get_tags(ctx: CallContext, req: Request) -> dict:
    spec = req.mapping("filter", {})
    wanted = {f: spec.get(f) for f in ("tags", "system_tags")}
    for field, value in wanted.items():
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise errors.validation(f"field 'filter.{field}' must be a list of strings")
    with ctx.store.tx() as conn:
        docs = ctx.store.get_many(conn, t.tasks) + ctx.store.get_many(conn, t.models)
    answer = {"tags": sorted(_tags_of(docs, "tags", wanted["tags"]))}
    if req.flag("include_system"):
        answer["system_tags"] = sorted(_tags_of(docs, "system_tags", wanted["system_tags"]))
    return answer


def _count(ctx: CallContext, field: str, query: dict) -> int:
    name, extra, listed = _COUNTED[field]
    handler = registry.lookup(name)
    if handler is None:  # the service is not loaded (never on a running server)
        return 0
    body = {**query, **extra, "only_fields": ["id"]}
    body.pop("page", None)
    body.pop("page_size", None)
    return len(handler(replace(ctx, endpoint=name), Request(body))[listed])


@endpoint("organization.get_entities_count")
def get_entities_count(ctx: CallContext, req: Request) -> dict:
    search_hidden = req.flag("search_hidden")
    answer = {}
    for field in _COUNTED:
        query = req.mapping(field)
        if query is not None:
            answer[field] = _count(ctx, field, {"search_hidden": search_hidden, **query})
    return answer


@endpoint("organization.get_user_companies")
def get_user_companies(ctx: CallContext, req: Request) -> dict:
    names = user_names(ctx.store)
    owners = [{"id": uid, "name": name, "avatar": ""} for uid, name in sorted(names.items())
              if uid == ctx.identity.user]
    return {"companies": [{"id": COMPANY, "name": COMPANY, "allocated": len(names), "owners": owners}]}
