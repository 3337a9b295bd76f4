"""projects.* endpoints that list distinct values found under projects: tags, task parents,
hyperparameters and their values, metric/variant pairs, model metadata keys and values, users.

Each reads only the JSON parts it needs (`doc["tags"]` and the like, extracted by the database),
over the projects asked for and, unless `include_subprojects` is false, their subprojects; no
projects means all of them.
"""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import or_, select

from server import query
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events.store import chunks, metric_hash
from server.services.projects.crud import check_request
from server.storage import tables as t

DEFAULT_PAGE_SIZE = 500


def _scope(conn, project_ids: list[str] | None, with_children: bool) -> list[str] | None:
    """The project ids to search: the given ones and (by default) their subprojects; None = all."""
    if not project_ids:
        return None
    if not with_children:
        return list(project_ids)
    wanted, found = set(project_ids), set(project_ids)
    for pid, path in conn.execute(select(t.projects.c.id, t.projects.c.doc["path"])):
        if wanted.intersection(path or []):
            found.add(pid)
    return sorted(found)


def _column_rows(ctx: CallContext, req: Request, table: Any, columns: list[Any],
                 projects_key: str = "projects", where: Iterable[Any] = ()) -> list[Any]:
    """`columns` of the rows of `table` under the request's projects."""
    ids = req.str_list(projects_key) or []
    with ctx.store.tx() as conn:
        scope = _scope(conn, ids, req.flag("include_subprojects", True))
        stmt = select(*columns).where(*where)
        if scope is not None:
            stmt = stmt.where(table.c.project.in_(scope))
        return list(conn.execute(stmt))


def _page(values: list[Any], req: Request) -> tuple[list[Any], int]:
    """One page of `values` and how many remain after it."""
    page = max(req.integer("page", 0), 0)
    size = max(req.integer("page_size", DEFAULT_PAGE_SIZE), 1)
    chunk = values[page * size:(page + 1) * size]
    return chunk, max(len(values) - (page + 1) * size, 0)


# -- tags -----------------------------------------------------------------------------------

def _filter_ok(tags: Any, system_tags: Any, wanted: dict) -> bool:
    return all(_tags_ok(have or [], wanted.get(key)) for key, have in (("tags", tags), ("system_tags", system_tags)))


def _tags_ok(have: list[str], wanted: list[Any] | None) -> bool:
    """query.tags_match, with a null entry matching no tags at all."""
    if not wanted:
        return True
    rest = [w for w in wanted if isinstance(w, str)]
    return (None in wanted and not have) or (bool(rest) and query.tags_match(have, rest))


def _tags_answer(rows: list[Any], req: Request) -> dict:
    wanted = req.mapping("filter") or {}
    rows = [r for r in rows if _filter_ok(r[0], r[1], wanted)]
    answer = {"tags": sorted({x for r in rows for x in r[0] or [] if isinstance(x, str)})}
    if req.flag("include_system"):
        answer["system_tags"] = sorted({x for r in rows for x in r[1] or [] if isinstance(x, str)})
    return answer


@endpoint("projects.get_task_tags")
@endpoint("projects.get_model_tags")
def entity_tags(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    table = t.tasks if ctx.endpoint == "projects.get_task_tags" else t.models
    return _tags_answer(_column_rows(ctx, req, table, [table.c.doc["tags"], table.c.doc["system_tags"]]), req)


@endpoint("projects.get_project_tags")
def project_tags(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    ids = req.str_list("projects") or []
    p = t.projects.c
    with ctx.store.tx() as conn:
        scope = _scope(conn, ids, True)
        stmt = select(p.doc["tags"], p.doc["system_tags"])
        rows = list(conn.execute(stmt if scope is None else stmt.where(p.id.in_(scope))))
    return _tags_answer(rows, req)


# -- task parents -----------------------------------------------------------------------------

def _state_clause(state: Any) -> list[Any]:
    c = t.tasks.c
    if state == "archived":
        return [c.archived.is_(True)]
    return [] if state is None else [or_(c.archived.is_(None), c.archived.is_(False))]


@endpoint("projects.get_task_parents")
def task_parents(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    c = t.tasks.c
    where = [c.parent.isnot(None), *_state_clause(req.body.get("tasks_state", "active"))]
    parent_ids = sorted({r[0] for r in _column_rows(ctx, req, t.tasks, [c.parent], where=where)})
    with ctx.store.tx() as conn:
        parents = [p for part in chunks(parent_ids) for p in ctx.store.get_many(conn, t.tasks, [c.id.in_(part)])]
        names = dict(conn.execute(select(t.projects.c.id, t.projects.c.name)).all())
    pattern = req.text("task_name")
    if pattern:
        rx = query.compile_regex(pattern, "task_name")
        parents = [p for p in parents if rx.matches(p.get("name") or "")]
    answer = [{"id": p["id"], "name": p.get("name") or "",
               "project": {"id": p.get("project"), "name": names.get(p.get("project"))}} for p in parents]
    return {"parents": sorted(answer, key=lambda p: (p["name"], p["id"]))}


# -- hyperparameters --------------------------------------------------------------------------

def _hyperparams(ctx: CallContext, req: Request, projects_key: str) -> list[dict]:
    c = t.tasks.c
    return [r[0] for r in _column_rows(ctx, req, t.tasks, [c.doc["hyperparams"]], projects_key)
            if isinstance(r[0], dict)]


@endpoint("projects.get_hyper_parameters")
def hyper_parameters(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    req.body["projects"] = [req.id("project", "project")]
    found = {(section, name) for params in _hyperparams(ctx, req, "projects")
             for section, items in params.items() if isinstance(items, dict) for name in items}
    page, remaining = _page(sorted(found), req)
    return {"parameters": [{"section": s, "name": n} for s, n in page], "remaining": remaining, "total": len(found)}


def _param_value(params: dict, section: str, name: str) -> Any:
    item = (params.get(section) or {}).get(name) if isinstance(params.get(section), dict) else None
    return item.get("value") if isinstance(item, dict) else None


@endpoint("projects.get_hyperparam_values")
def hyperparam_values(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    section, name = req.text("section", required=True), req.text("name", required=True)
    values = {str(v) for params in _hyperparams(ctx, req, "projects")
              if (v := _param_value(params, section, name)) is not None}
    pattern = req.text("pattern")
    if pattern:
        rx = query.compile_regex(pattern, "pattern")
        values = {v for v in values if rx.matches(v)}
    page, _ = _page(sorted(values), req)
    return {"total": len(values), "values": page}


# -- metrics ----------------------------------------------------------------------------------

def _metric_pairs(last_metrics: Any) -> Iterable[tuple[str, str]]:
    for variants in (last_metrics or {}).values() if isinstance(last_metrics, dict) else ():
        for entry in (variants or {}).values() if isinstance(variants, dict) else ():
            if isinstance(entry, dict) and isinstance(entry.get("metric"), str):
                yield entry["metric"], str(entry.get("variant") or "")


@endpoint("projects.get_unique_metric_variants")
def unique_metric_variants(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    table = t.models if req.flag("model_metrics") else t.tasks
    ids = req.str_list("ids")
    where = [table.c.id.in_(ids)] if ids else []
    project = req.text("project")
    req.body["projects"] = [project] if project else []
    rows = _column_rows(ctx, req, table, [table.c.doc["last_metrics"]], where=where)
    pairs = sorted({pair for (last,) in rows for pair in _metric_pairs(last)})
    return {"metrics": [{"metric": m, "metric_hash": metric_hash(m), "variant": v, "variant_hash": metric_hash(v)}
                        for m, v in pairs]}


# -- model metadata ---------------------------------------------------------------------------

def _metadata_items(metadata: Any) -> Iterable[dict]:
    items = metadata.values() if isinstance(metadata, dict) else metadata if isinstance(metadata, list) else ()
    return (i for i in items if isinstance(i, dict) and isinstance(i.get("key"), str))


def _metadata(ctx: CallContext, req: Request) -> list[dict]:
    rows = _column_rows(ctx, req, t.models, [t.models.c.doc["metadata"]])
    return [item for (metadata,) in rows for item in _metadata_items(metadata)]


@endpoint("projects.get_model_metadata_keys")
def model_metadata_keys(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    req.body["projects"] = [req.id("project", "project")]
    keys = sorted({item["key"] for item in _metadata(ctx, req)})
    page, remaining = _page(keys, req)
    return {"keys": page, "remaining": remaining, "total": len(keys)}


@endpoint("projects.get_model_metadata_values")
def model_metadata_values(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    key = req.text("key", required=True)
    values = sorted({str(i.get("value")) for i in _metadata(ctx, req) if i["key"] == key and i.get("value") is not None})
    page, _ = _page(values, req)
    return {"total": len(values), "values": page}


# -- users ------------------------------------------------------------------------------------

def _user_names(ctx: CallContext, ids: set[str]) -> dict[str, str]:
    """A user is an access key; its name is the key's label where it has one."""
    cred = t.credentials.c
    with ctx.store.tx() as conn:
        rows = conn.execute(select(cred.access_key, cred.name).where(cred.access_key.in_(sorted(ids))))
        return {key: name or key for key, name in rows}


@endpoint("projects.get_user_names")
def user_names(ctx: CallContext, req: Request) -> dict:
    check_request(ctx.endpoint, req)
    table = t.models if req.body.get("entity") == "model" else t.tasks
    ids = {r[0] for r in _column_rows(ctx, req, table, [table.c.doc["user"]]) if isinstance(r[0], str) and r[0]}
    names = _user_names(ctx, ids)
    users = [{"id": user, "name": names.get(user, user)} for user in ids]
    return {"users": sorted(users, key=lambda u: (u["name"], u["id"]))}
