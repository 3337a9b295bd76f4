"""projects.* endpoints that act on a whole subtree: validate_delete, delete, move, merge.

As the reference server: a project's subtree is itself and every project whose `path` holds it;
deleting without `force` is refused while the subtree holds pipelines with active controllers
(400/413), datasets with versions (400/406), or tasks (400/402) or models (400/405) that are not
archived; without `delete_contents` the tasks and models are left without a project.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select

from server import errors
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events.store import chunks
from server.services.projects.crud import (
    check_depth,
    check_request,
    descendants,
    ensure_project,
    find_by_name,
    get_project,
    name_taken,
    place_under,
)
from server.storage import tables as t
from server.storage.store import Store
from shipyard import clock
from shipyard.protocol import Subcode, SystemTag, TaskType

REPORTS_TAG = "reports"  # the system tag of a report (a task of type `report`)


def _is_archived(doc: dict) -> bool:
    return SystemTag.ARCHIVED in (doc.get("system_tags") or [])


def _task_rows(conn, project_ids: list[str]) -> list[tuple[Any, Any]]:
    """(archived, system_tags) of every task in the projects, without reading whole documents."""
    c = t.tasks.c
    return list(conn.execute(select(c.archived, c.doc["system_tags"]).where(c.project.in_(project_ids))))


def _models(ctx: CallContext, conn, project_ids: list[str]) -> list[dict]:
    return ctx.store.get_many(conn, t.models, [t.models.c.project.in_(project_ids)])


def _tagged(tree: list[dict], tag: str, folder: str) -> list[str]:
    """The projects of pipelines or datasets ("x/.pipelines/p", tagged) in the subtree, not their folder."""
    return [p["id"] for p in tree if tag in (p.get("system_tags") or []) and p.get("basename") != folder]


def _active_projects(conn, project_ids: list[str], *where: Any) -> int:
    """How many of the projects hold non-archived tasks (matching `where`)."""
    c = t.tasks.c
    stmt = select(c.project).distinct().where(c.project.in_(project_ids), or_(c.archived.is_(None),
                                                                             c.archived.is_(False)), *where)
    return len(conn.execute(stmt).all()) if project_ids else 0


def _content_counts(ctx: CallContext, conn, tree: list[dict]) -> dict[str, int]:
    """What validate_delete answers: pipelines with active controllers and datasets with versions,
    and the tasks, reports and models of the other projects of the subtree."""
    pipelines, datasets = _tagged(tree, "pipeline", ".pipelines"), _tagged(tree, "dataset", ".datasets")
    ids = [p["id"] for p in tree if p["id"] not in {*pipelines, *datasets}]
    rows = _task_rows(conn, ids)
    reports = [archived for archived, tags in rows if REPORTS_TAG in (tags or [])]
    tasks = [archived for archived, tags in rows if REPORTS_TAG not in (tags or [])]
    models = [_is_archived(m) for m in _models(ctx, conn, ids)]
    return {"tasks": len(tasks), "non_archived_tasks": tasks.count(False) + tasks.count(None),
            "models": len(models), "non_archived_models": models.count(False),
            "reports": len(reports), "non_archived_reports": reports.count(False) + reports.count(None),
            "pipelines": _active_projects(conn, pipelines, t.tasks.c.type == TaskType.CONTROLLER),
            "datasets": _active_projects(conn, datasets)}


def _subtree(ctx: CallContext, conn, project_id: str) -> list[dict]:
    return [get_project(ctx, conn, project_id), *descendants(ctx, conn, project_id)]


@endpoint("projects.validate_delete")
def validate_delete(ctx: CallContext, req: Request) -> dict:
    check_request("projects.validate_delete", req)
    with ctx.store.tx() as conn:
        return _content_counts(ctx, conn, _subtree(ctx, conn, req.id("project", "project")))


_REFUSALS = (  # (count, subcode, what) in the reference server's order
    ("pipelines", Subcode.PROJECT_HAS_PIPELINES, "pipelines with active controllers"),
    ("datasets", Subcode.PROJECT_HAS_DATASETS, "non-empty datasets"),
    ("non_archived_tasks", Subcode.PROJECT_HAS_TASKS, "tasks not archived"),
    ("non_archived_reports", Subcode.PROJECT_HAS_TASKS, "reports not archived"),
    ("non_archived_models", Subcode.PROJECT_HAS_MODELS, "models not archived"),
)


def _refuse_non_empty(ctx: CallContext, conn, project_id: str, tree: list[dict]) -> None:
    counts = _content_counts(ctx, conn, tree)
    for key, subcode, what in _REFUSALS:
        if counts[key]:
            raise errors.APIError(400, subcode, f"Project has {counts[key]} {what} (use force=true): id={project_id}")


def _disassociate(ctx: CallContext, conn, ids: list[str]) -> dict:
    tasks = ctx.store.get_many(conn, t.tasks, [t.tasks.c.project.in_(ids)])
    for table, docs in ((t.tasks, tasks), (t.models, _models(ctx, conn, ids))):
        for doc in docs:
            doc.pop("project", None)
            ctx.store.save(conn, table, doc)
    return {"disassociated_tasks": len(tasks), "deleted_tasks": 0, "deleted_models": 0}


def _event_urls(conn, owner_ids: list[str]) -> list[str]:
    c = t.events.c
    found: set[str] = set()
    for part in chunks(owner_ids):
        rows = conn.execute(select(c.doc["url"]).where(c.task.in_(part), c.type == "training_debug_image"))
        found.update(url for (url,) in rows if isinstance(url, str) and url)
    return sorted(found)


def _artifact_urls(tasks: list[dict]) -> list[str]:
    found = {(a or {}).get("uri") for doc in tasks for a in (doc.get("execution") or {}).get("artifacts") or []}
    return sorted(u for u in found if isinstance(u, str) and u)


def _unlink_outside(ctx: CallContext, conn, project_ids: list[str], task_ids: list[str]) -> None:
    """Tasks and models left in other projects lose their link to a deleted task (`parent`, `task`)."""
    for table, key in ((t.tasks, "parent"), (t.models, "task")):
        outside = or_(table.c.project.is_(None), table.c.project.not_in(project_ids))
        for part in chunks(task_ids):
            for doc in ctx.store.get_many(conn, table, [table.c[key].in_(part), outside]):
                doc.pop(key, None)
                ctx.store.save(conn, table, doc)


def _delete_rows(conn, task_ids: list[str], model_ids: list[str]) -> None:
    """The tasks and models, their events and queue entries (IN lists in chunks: a project may hold
    more tasks than a statement may have parameters)."""
    for part in chunks([*task_ids, *model_ids]):
        conn.execute(delete(t.events).where(t.events.c.task.in_(part)))
    for part in chunks(task_ids):
        conn.execute(delete(t.queue_entries).where(t.queue_entries.c.task.in_(part)))
        Store.delete_tasks(conn, part)
    for part in chunks(model_ids):
        conn.execute(delete(t.models).where(t.models.c.id.in_(part)))


def _delete_contents(ctx: CallContext, conn, ids: list[str]) -> dict:
    tasks = ctx.store.get_many(conn, t.tasks, [t.tasks.c.project.in_(ids)])
    models = _models(ctx, conn, ids)
    task_ids, model_ids = [d["id"] for d in tasks], [m["id"] for m in models]
    urls = {"model_urls": sorted({m["uri"] for m in models if m.get("uri")}),
            "event_urls": _event_urls(conn, [*task_ids, *model_ids]), "artifact_urls": _artifact_urls(tasks)}
    _unlink_outside(ctx, conn, ids, task_ids)
    _delete_rows(conn, task_ids, model_ids)
    return {"disassociated_tasks": 0, "deleted_tasks": len(tasks), "deleted_models": len(models), "urls": urls}


@endpoint("projects.delete")
def delete_project(ctx: CallContext, req: Request) -> dict:
    check_request("projects.delete", req)
    project_id = req.id("project", "project")
    with ctx.store.tx() as conn:
        tree = _subtree(ctx, conn, project_id)
        ids = [p["id"] for p in tree]
        if not req.flag("force"):
            _refuse_non_empty(ctx, conn, project_id, tree)
        result = _delete_contents(ctx, conn, ids) if req.flag("delete_contents") else _disassociate(ctx, conn, ids)
        for project in tree:
            ctx.store.delete(conn, t.projects, project["id"])
    return {"deleted": len(tree), **result}


def _reposition(ctx: CallContext, conn, project: dict, children: list[dict], parent: dict | None) -> int:
    """Put `project` (with its subtree `children`) under `parent`; returns how many moved."""
    old_name, old_path = project["name"], list(project.get("path") or [])
    new_name = "/".join(filter(None, (parent["name"] if parent else "", project["basename"])))
    if find_by_name(conn, new_name):
        raise name_taken(new_name)
    now = clock.iso()
    project.update(name=new_name, last_update=now)
    place_under(project, parent)
    ctx.store.save(conn, t.projects, project)
    for child in children:
        child.update(name=new_name + child["name"][len(old_name):], last_update=now,
                     path=project["path"] + child["path"][len(old_path):])
        ctx.store.save(conn, t.projects, child)
    return 1 + len(children)


def _check_moved_depth(project: dict, children: list[dict], new_parent_depth: int) -> None:
    old_parent_depth = len(project.get("path") or [])
    for doc in (project, *children):
        check_depth(len(doc.get("path") or []) + 1 - old_parent_depth + new_parent_depth)


def _touch(ctx: CallContext, conn, project: dict | None) -> None:
    if project:
        project["last_update"] = clock.iso()
        ctx.store.save(conn, t.projects, project)


@endpoint("projects.move")
def move(ctx: CallContext, req: Request) -> dict:
    check_request("projects.move", req)
    project_id = req.id("project", "project")
    location = req.text("new_location") or ""
    with ctx.store.tx() as conn:
        project = get_project(ctx, conn, project_id)
        children = descendants(ctx, conn, project_id)
        _check_moved_depth(project, children, len([p for p in location.split("/") if p.strip()]))
        new_parent = ensure_project(ctx, conn, location)
        if (new_parent or {}).get("id") == project.get("parent"):
            raise errors.APIError(400, Subcode.PROJECT_SAME_LOCATION,
                                  f"Project has the same source and destination paths: location={location}")
        if new_parent and project_id in (new_parent["id"], *(new_parent.get("path") or [])):
            raise errors.APIError(400, Subcode.PROJECT_UNDER_ITSELF,
                                  f"Project can not be moved under itself: project={project_id}")
        old_parent = ctx.store.get(conn, t.projects, project["parent"]) if project.get("parent") else None
        moved = _reposition(ctx, conn, project, children, new_parent)
        _touch(ctx, conn, old_parent)
        _touch(ctx, conn, ctx.store.get(conn, t.projects, new_parent["id"]) if new_parent else None)
    return {"moved": moved}


def _merge_target(ctx: CallContext, conn, source: dict, destination_id: str | None) -> dict | None:
    if destination_id == source["id"]:
        raise errors.APIError(400, Subcode.PROJECT_SAME_LOCATION,
                              f"Project has the same source and destination: source={source['id']}")
    if not destination_id:
        return None
    destination = get_project(ctx, conn, destination_id)
    if source["id"] in (destination.get("path") or []):
        raise errors.APIError(400, Subcode.PROJECT_MERGED_INTO_CHILD,
                              f"Project can not be merged into its own child: source={source['id']}")
    return destination


def _move_entities(ctx: CallContext, conn, source_id: str, destination_id: str | None) -> int:
    """Move the source's non-archived tasks and models (archived ones stay, as the reference does)."""
    moved = 0
    for table in (t.tasks, t.models):
        for doc in ctx.store.get_many(conn, table, [table.c.project == source_id]):
            if not _is_archived(doc):
                doc["project"] = destination_id
                ctx.store.save(conn, table, {k: v for k, v in doc.items() if k != "project" or v})
                moved += 1
    return moved


@endpoint("projects.merge")
def merge(ctx: CallContext, req: Request) -> dict:
    check_request("projects.merge", req)
    with ctx.store.tx() as conn:
        source = get_project(ctx, conn, req.id("project", "project"))
        destination = _merge_target(ctx, conn, source, req.text("destination_project"))
        children = descendants(ctx, conn, source["id"])
        if destination:
            _check_moved_depth(source, children, len(destination.get("path") or []) + 1)
        moved_entities = _move_entities(ctx, conn, source["id"], (destination or {}).get("id"))
        direct = [c for c in children if c.get("parent") == source["id"]]
        for child in direct:
            subtree = [c for c in children if child["id"] in (c.get("path") or [])]
            _reposition(ctx, conn, child, subtree, destination)
        ctx.store.delete(conn, t.projects, source["id"])
        _touch(ctx, conn, destination)
    return {"moved_entities": moved_entities, "moved_projects": len(direct)}

