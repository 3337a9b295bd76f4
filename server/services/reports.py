"""reports.*: a report is a task of type `report` whose markdown is its `report` field.

As on the reference server, a report lives in a hidden `.reports` project under the project it
belongs to (`a/b/.reports`, or `.reports` at the top), tagged `reports` and `hidden`, and so do
its tasks; the project goes with its last report (delete, move).

    create, update      the report's name, comment, tags, markdown and `report_assets`; a
                        published report takes only name, comment and tags
    publish, archive,   its status (created -> published) and the `archived` system tag
    unarchive, delete   (a published report that is not archived goes only with force)
    move                to another project's `.reports`
    get_all_ex, get_tags  the tasks.get_all_ex query, on reports alone
    get_task_data       the tasks (or, with model_events, models) a report embeds and, asked
                        for, their debug images, plots, scalar histograms and single values,
                        answered by the events services
"""
from __future__ import annotations

import textwrap
from dataclasses import replace
from typing import Any

from sqlalchemy import func, select

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.events import compare, metrics
from server.services.models import crud as models
from server.services.projects.crud import ensure_project, get_project
from server.services.tasks import doc as taskdoc
from server.services.tasks import ex
from server.storage import tables as t
from server.storage.store import new_id
from shipyard import clock
from shipyard.protocol import Subcode, SystemTag, TaskStatus

REPORT = "report"                 # the task type
REPORTS_PROJECT = ".reports"      # the hidden project a report lives in
REPORTS_TAG = "reports"
_EDITABLE = ("name", "tags", "comment", "report", "report_assets")
_EDITABLE_PUBLISHED = {"name", "tags", "comment"}
_EVENT_PARTS = ("plots", "debug_images", "scalar_metrics_iter_histogram", "single_value_metrics", "model_events")


def _check(ctx: CallContext, req: Request) -> None:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)


def _report(ctx: CallContext, conn, task_id: str) -> dict:
    doc = taskdoc.load(ctx, conn, task_id)
    if doc.get("type") != REPORT:
        raise errors.APIError(400, Subcode.VALIDATION_ERROR, f"passed task is not a report: task={task_id}",
                              {"task": task_id})
    return doc


def _reports_project(ctx: CallContext, conn, project_name: str) -> str:
    """The id of `project_name`'s `.reports` project, made (hidden, tagged) when missing."""
    name = project_name.strip("/")
    if name.rpartition("/")[2] != REPORTS_PROJECT:
        name = f"{name}/{REPORTS_PROJECT}" if name else REPORTS_PROJECT
    project = ensure_project(ctx, conn, name)
    assert project is not None  # a non-empty name always makes a project
    wanted = [REPORTS_TAG, SystemTag.HIDDEN]
    if any(tag not in (project.get("system_tags") or []) for tag in wanted):
        project["system_tags"] = list(dict.fromkeys([*(project.get("system_tags") or []), *wanted]))
        ctx.store.save(conn, t.projects, project)
    return str(project["id"])


def _drop_if_empty(ctx: CallContext, conn, project_id: str | None) -> None:
    """A `.reports` project goes with its last task."""
    project = ctx.store.get(conn, t.projects, project_id) if project_id else None
    if project_id is None or project is None or project.get("basename") != REPORTS_PROJECT:
        return
    left = conn.execute(select(func.count()).select_from(t.tasks).where(t.tasks.c.project == project_id)).scalar_one()
    if not left:
        ctx.store.delete(conn, t.projects, project_id)


def _project_name(ctx: CallContext, conn, project_id: str | None) -> str:
    return str(get_project(ctx, conn, project_id)["name"]) if project_id else ""


@endpoint("reports.create")
def create(ctx: CallContext, req: Request) -> dict:
    _check(ctx, req)
    name = req.text("name", required=True)
    task_id = new_id()
    with ctx.store.tx() as conn:
        project_id = _reports_project(ctx, conn, _project_name(ctx, conn, req.text("project")))
        fields = {k: req.body[k] for k in ("tags", "comment", "report", "report_assets") if req.body.get(k) is not None}
        doc = taskdoc.new_task_doc(ctx, task_id, {
            **fields, "name": name, "type": REPORT, "project": project_id,
            "system_tags": [REPORTS_TAG, SystemTag.HIDDEN]})
        ctx.store.insert(conn, t.tasks, doc)
    return {"id": task_id, "project_id": project_id}


def _shown(fields: dict) -> dict:
    """The `fields` an update answers: tags sorted, the markdown cut short."""
    shown = dict(fields)
    if shown.get("tags"):
        shown["tags"] = sorted(shown["tags"])
    if shown.get("report"):
        shown["report"] = textwrap.shorten(shown["report"], width=100)
    return shown


@endpoint("reports.update")
def update(ctx: CallContext, req: Request) -> dict:
    _check(ctx, req)
    task_id = req.id("task", "task")
    fields = {k: req.body[k] for k in _EDITABLE if k in req.body}
    with ctx.store.tx() as conn:
        doc = _report(ctx, conn, task_id)
        if not fields:
            return {"updated": 0}
        if doc.get("status") != TaskStatus.CREATED and not set(fields) <= _EDITABLE_PUBLISHED:
            raise errors.invalid_status(f"A published report takes only name, comment and tags: task={task_id} "
                                        f"status={doc.get('status')}")
        doc.update(fields)
        taskdoc.touch(ctx, doc, change=True)
        ctx.store.save(conn, t.tasks, doc)
    return {"updated": 1, "fields": _shown(fields)}


@endpoint("reports.move")
def move(ctx: CallContext, req: Request) -> dict:
    _check(ctx, req)
    task_id = req.id("task", "task")
    if "project" not in req.body and not req.text("project_name"):
        raise errors.missing_field("project", "project_name")
    with ctx.store.tx() as conn:
        doc = _report(ctx, conn, task_id)
        name = req.text("project_name") or _project_name(ctx, conn, req.text("project"))
        target = _reports_project(ctx, conn, name)
        source = doc.get("project")
        if source != target:
            doc["project"] = target
            taskdoc.touch(ctx, doc)
            ctx.store.save(conn, t.tasks, doc)
            _drop_if_empty(ctx, conn, source)
    return {"project_id": target}


@endpoint("reports.publish")
def publish(ctx: CallContext, req: Request) -> dict:
    _check(ctx, req)
    task_id = req.id("task", "task")
    now = clock.iso()
    with ctx.store.tx() as conn:
        doc = _report(ctx, conn, task_id)
        if doc.get("status") != TaskStatus.CREATED:
            raise errors.invalid_status(f"Only a report in 'created' status can be published: task={task_id} "
                                        f"status={doc.get('status')}")
        changes = {"status": TaskStatus.PUBLISHED, "status_changed": now, "published": now,
                   "status_reason": "", "status_message": req.text("comment") or ""}
        doc.update(changes)
        taskdoc.touch(ctx, doc)
        ctx.store.save(conn, t.tasks, doc)
    return {"updated": 1, "fields": changes}


def _set_archived(ctx: CallContext, req: Request, archived: bool) -> int:
    _check(ctx, req)
    task_id = req.id("task", "task")
    with ctx.store.tx() as conn:
        doc = _report(ctx, conn, task_id)
        tags = [tag for tag in doc.get("system_tags") or [] if tag != SystemTag.ARCHIVED]
        tags += [SystemTag.ARCHIVED] if archived else []
        if tags == (doc.get("system_tags") or []):
            return 0
        doc.update(system_tags=tags, status_message=req.text("comment") or "", status_reason="")
        taskdoc.touch(ctx, doc)
        ctx.store.save(conn, t.tasks, doc)
    return 1


@endpoint("reports.archive")
def archive(ctx: CallContext, req: Request) -> dict:
    return {"archived": _set_archived(ctx, req, True)}


@endpoint("reports.unarchive")
def unarchive(ctx: CallContext, req: Request) -> dict:
    return {"unarchived": _set_archived(ctx, req, False)}


@endpoint("reports.delete")
def delete(ctx: CallContext, req: Request) -> dict:
    _check(ctx, req)
    task_id = req.id("task", "task")
    with ctx.store.tx() as conn:
        doc = _report(ctx, conn, task_id)
        kept = doc.get("status") != TaskStatus.CREATED and SystemTag.ARCHIVED not in (doc.get("system_tags") or [])
        if kept and not req.flag("force"):
            raise errors.APIError(400, Subcode.TASK_CANNOT_BE_DELETED,
                                  f"Cannot delete a published report that is not archived without force=true: "
                                  f"task={task_id}", {"task": task_id, "status": doc.get("status")})
        ctx.store.delete(conn, t.tasks, task_id)
        _drop_if_empty(ctx, conn, doc.get("project"))
    return {"deleted": 1}


@endpoint("reports.get_tags")
def get_tags(ctx: CallContext, req: Request) -> dict:
    _check(ctx, req)
    with ctx.store.tx() as conn:
        docs = ctx.store.get_many(conn, t.tasks, [t.tasks.c.type == REPORT])
    return {"tags": sorted({tag for d in docs for tag in d.get("tags") or [] if isinstance(tag, str)})}


# -- queries ------------------------------------------------------------------------------------

def _reports_projects_of(ctx: CallContext, projects: list[str], deep: bool) -> list[str]:
    """The `.reports` projects among `projects` and directly under them (at any depth when `deep`)."""
    with ctx.store.tx() as conn:
        docs = ctx.store.get_many(conn, t.projects, [t.projects.c.name.like(f"%{REPORTS_PROJECT}")])
    wanted = set(projects)

    def under(doc: dict) -> bool:
        return doc["id"] in wanted or doc.get("parent") in wanted or deep and bool(wanted & set(doc.get("path") or []))
    return [d["id"] for d in docs if d.get("basename") == REPORTS_PROJECT and under(d)]


def _select(ctx: CallContext, body: dict) -> tuple[list[dict], str | None]:
    """The tasks.get_all_ex query on `body`."""
    return ex.select(replace(ctx, endpoint="tasks.get_all_ex"), Request(body))


@endpoint("reports.get_all_ex")
def get_all_ex(ctx: CallContext, req: Request) -> dict:
    _check(ctx, req)
    body: dict[str, Any] = {**req.body, "type": [REPORT], "search_hidden": True}
    if req.body.get("project"):
        projects = _reports_projects_of(ctx, req.str_list("project") or [], req.flag("include_subprojects"))
        if not projects:
            return {"tasks": []}
        body.update(project=projects, include_subprojects=False)
    docs, scroll_id = _select(ctx, body)
    tasks = ex.join(ctx, docs, req.body.get("only_fields"))
    return {"tasks": tasks, "scroll_id": scroll_id} if scroll_id else {"tasks": tasks}


def _call(handler: Any, ctx: CallContext, name: str, body: dict) -> dict:
    answer: dict = handler(replace(ctx, endpoint=name), Request(body))
    return answer


def _metric_specs(ids: list[str], part: dict) -> list[dict]:
    return [{"task": task, "metric": m.get("metric") or "", "variants": m.get("variants") or []}
            for task in ids for m in part.get("metrics") or [{}]]


def _event_parts(ctx: CallContext, req: Request, ids: list[str]) -> dict:
    """What the report embeds of these tasks, each part from the events endpoint that answers it."""
    out: dict[str, Any] = {}
    parts = {k: req.mapping(k) for k in _EVENT_PARTS[:-1]}
    if parts["debug_images"] is not None:
        body = {"metrics": _metric_specs(ids, parts["debug_images"]), "iters": parts["debug_images"].get("iters")}
        out["debug_images"] = _call(metrics.debug_images, ctx, "events.debug_images", body)["metrics"]
    if parts["plots"] is not None:
        plots = parts["plots"]
        body = {"tasks": ids, "iters": plots.get("iters") or 1, "metrics": plots.get("metrics"), "no_scroll": True,
                "last_iters_per_task_metric": plots.get("last_iters_per_task_metric", True)}
        out["plots"] = _call(compare.get_multi_task_plots, ctx, "events.get_multi_task_plots", body)["plots"]
    if parts["scalar_metrics_iter_histogram"] is not None:
        body = {"tasks": ids, **parts["scalar_metrics_iter_histogram"]}
        out["scalar_metrics_iter_histogram"] = _call(
            metrics.multi_task_scalar_metrics_iter_histogram, ctx, "events.multi_task_scalar_metrics_iter_histogram",
            body)["metrics"]
    if parts["single_value_metrics"] is not None:
        out["single_value_metrics"] = _call(metrics.get_task_single_value_metrics, ctx,
                                            "events.get_task_single_value_metrics", {"tasks": ids})["tasks"]
    return out


@endpoint("reports.get_task_data")
def get_task_data(ctx: CallContext, req: Request) -> dict:
    _check(ctx, req)
    query = {k: v for k, v in req.body.items() if k not in _EVENT_PARTS}
    if req.flag("model_events"):  # the embedded entities are models (answered under `tasks`, as the reference does)
        answer: dict[str, Any] = {"tasks": _call(models.get_all_ex, ctx, "models.get_all_ex", query)["models"]}
    else:
        docs, scroll_id = _select(ctx, query)
        answer = {"tasks": ex.join(ctx, docs, req.body.get("only_fields")),
                  **({"scroll_id": scroll_id} if scroll_id else {})}
    ids = [d["id"] for d in answer["tasks"]]
    return {**answer, **(_event_parts(ctx, req, ids) if ids else {})}
