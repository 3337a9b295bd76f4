"""pipelines.*: a pipeline run is a controller task (type `controller`) in the pipeline's project.

    start_pipeline  clone a run's controller task, its `args` written to the clone's `Args`
                    hyper-parameter section, named after the pipeline's project (`name #N`), and
                    enqueue it (the given queue or the default one), as tasks.clone and
                    tasks.enqueue do it; `verify_watched_queue` says whether a live worker
                    watches that queue
    delete_runs     delete the given runs of a pipeline project with their step tasks (children
                    of the run), each on its own as tasks.delete_many does; the last run of a
                    project is never deleted (the pipeline would be gone)
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from sqlalchemy import select

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.tasks import batch, crud, status
from server.services.tasks import doc as taskdoc
from server.services.workers.crud import live_workers
from server.storage import tables as t
from shipyard.protocol import Subcode, TaskType

PIPELINE_TAG = "pipeline"
ARGS_SECTION = "Args"


def _args(req: Request) -> dict[str, dict]:
    args = req.array("args") or []
    return {str(a["name"]): {"section": ARGS_SECTION, "name": str(a["name"]),
                             "value": "" if a.get("value") is None else str(a["value"])} for a in args}


def _hyperparams(ctx: CallContext, req: Request, task_id: str) -> dict:
    with ctx.store.tx() as conn:
        source = taskdoc.load(ctx, conn, task_id)
    hyperparams: dict[str, Any] = dict(source.get("hyperparams") or {})
    args = _args(req)
    if args:
        hyperparams[ARGS_SECTION] = {**(hyperparams.get(ARGS_SECTION) or {}), **args}
    return hyperparams


def _run_name(ctx: CallContext, conn, project_id: str | None) -> str | None:
    """`<project basename>`, or `<basename> #N` with N the runs already named so."""
    project = ctx.store.get(conn, t.projects, project_id) if project_id else None
    if project is None:
        return None
    prefix = str(project.get("basename") or project["name"].rpartition("/")[2])
    mask = re.compile(rf"{re.escape(prefix)}( #\d+)?$")
    runs = ctx.store.get_many(conn, t.tasks, [t.tasks.c.project == project_id])
    count = sum(1 for d in runs if PIPELINE_TAG in (d.get("system_tags") or []) and mask.match(d.get("name") or ""))
    return f"{prefix} #{count}" if count else prefix


def _rename(ctx: CallContext, task_id: str) -> None:
    with ctx.store.tx() as conn:
        doc = taskdoc.load(ctx, conn, task_id)
        name = _run_name(ctx, conn, doc.get("project"))
        if name:
            doc["name"] = name
            ctx.store.save(conn, t.tasks, doc)


def _queue_watched(ctx: CallContext, queue_id: str) -> bool:
    with ctx.store.tx() as conn:
        workers = live_workers(ctx, conn)
    return any(queue_id in {q.get("id") if isinstance(q, dict) else q for q in w.get("queues") or []}
               for w in workers)


@endpoint("pipelines.start_pipeline")
def start_pipeline(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    task_id = req.id("task", "task")
    clone_req = Request({"task": task_id, "new_task_hyperparams": _hyperparams(ctx, req, task_id)})
    new_id = crud.clone(dataclasses.replace(ctx, endpoint="tasks.clone"), clone_req)["id"]
    _rename(ctx, new_id)
    queued = status.enqueue(dataclasses.replace(ctx, endpoint="tasks.enqueue"), Request({
        "task": new_id, "queue": req.text("queue"), "status_message": "Starting pipeline", "status_reason": ""}))
    answer: dict[str, Any] = {"pipeline": new_id, "enqueued": bool(queued.get("queued"))}
    if req.flag("verify_watched_queue"):
        answer["queue_watched"] = _queue_watched(ctx, queued["fields"]["execution"]["queue"])
    return answer


# -- delete_runs ---------------------------------------------------------------------------------

def _runs(ctx: CallContext, project: str) -> set[str]:
    c = t.tasks.c
    with ctx.store.tx() as conn:
        return {r[0] for r in conn.execute(select(c.id).where(c.project == project, c.type == TaskType.CONTROLLER))}


def _steps(ctx: CallContext, run: str) -> list[str]:
    c = t.tasks.c
    with ctx.store.tx() as conn:
        return [r[0] for r in conn.execute(select(c.id).where(c.parent == run, c.id != run))]


def _delete_run(ctx: CallContext, req: Request) -> dict:
    """One run and its steps (a step that fails to go leaves the run standing)."""
    run = req.body["task"]
    for step in _steps(ctx, run):
        crud.delete_task(ctx, Request({"task": step, "force": True, "delete_output_models": True}))
    return crud.delete_task(ctx, Request({"task": run, "force": True, "delete_output_models": True}))


def _shape(result: dict) -> dict:
    return {"deleted": bool(result.get("deleted")), "updated_children": result.get("updated_children", 0),
            "updated_models": result.get("updated_models", 0), "deleted_models": result.get("deleted_models", 0)}


@endpoint("pipelines.delete_runs")
def delete_runs(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    project = req.id("project", "project")
    ids = req.str_list("ids") or []
    if not ids:
        raise errors.missing_field("ids")
    existing = _runs(ctx, project)
    if existing and not existing.difference(ids):
        raise errors.APIError(400, Subcode.VALIDATION_ERROR, f"Cannot remove all the runs of a pipeline: "
                              f"project={project}", {"project": project})
    wanted = [i for i in dict.fromkeys(ids) if i in existing]  # only the project's controller tasks
    if not wanted:
        return {"succeeded": [], "failed": []}
    return batch.run_many(ctx, Request({"ids": wanted}), _delete_run, "tasks.delete", _shape)

