"""tasks.*_many: one action over a list of task ids, each id on its own.

As on the reference server, a batch never fails as a whole for one bad id: every id is tried in
its own transaction through the single-task endpoint, and the answer lists what `succeeded`
(with that endpoint's fields) and what `failed` (with the error's codes and message).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from server.rpc.registry import CallContext, Request, endpoint
from server.services import batch
from server.services.tasks import crud, status
from shipyard.protocol import SystemTag

Single = batch.Single


def run_many(ctx: CallContext, req: Request, single: Single, name: str,
             shape: Callable[[dict], dict[str, Any]]) -> dict:
    """Call `single` (the endpoint `name`) once per id with the batch's other fields."""
    return batch.each_id(dataclasses.replace(ctx, endpoint=name), req, single, field="task", shape=shape)


def _updated(result: dict) -> dict:
    return {"updated": result.get("updated", 0), "fields": result.get("fields") or {}}


@endpoint("tasks.stop_many")
def stop_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, status.stop, "tasks.stop", _updated)


@endpoint("tasks.enqueue_many")
def enqueue_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, status.enqueue, "tasks.enqueue",
                    lambda r: {"queued": bool(r.get("queued")), **_updated(r)})


@endpoint("tasks.delete_many")
def delete_many(ctx: CallContext, req: Request) -> dict:
    def shape(r: dict) -> dict:
        out = {"deleted": bool(r.get("deleted")), "updated_children": r.get("updated_children", 0),
               "updated_models": r.get("updated_models", 0), "deleted_models": r.get("deleted_models", 0)}
        return {**out, "urls": r["urls"]} if "urls" in r else out

    return run_many(ctx, req, crud.delete_task, "tasks.delete", shape)


def _archive_one(archived: bool) -> Single:
    def single(ctx: CallContext, req: Request) -> dict:
        if archived:
            status.dequeue_if_queued(ctx, req.body["task"])
        return {"changed": crud.set_system_tag(ctx, [req.body["task"]], SystemTag.ARCHIVED, archived)}
    return single


@endpoint("tasks.archive_many")
def archive_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, _archive_one(True), "tasks.archive_many", lambda r: {"archived": bool(r["changed"])})


@endpoint("tasks.unarchive_many")
def unarchive_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, _archive_one(False), "tasks.unarchive_many",
                    lambda r: {"unarchived": bool(r["changed"])})


@endpoint("tasks.reset_many")
def reset_many(ctx: CallContext, req: Request) -> dict:
    def shape(r: dict) -> dict:
        out = {"dequeued": bool(r.get("dequeued")), **_updated(r), "deleted_models": r.get("deleted_models", 0)}
        return {**out, "urls": r["urls"]} if "urls" in r else out

    return run_many(ctx, req, status.reset, "tasks.reset", shape)


@endpoint("tasks.publish_many")
def publish_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, status.publish, "tasks.publish", _updated)


@endpoint("tasks.dequeue_many")
def dequeue_many(ctx: CallContext, req: Request) -> dict:
    return run_many(ctx, req, status.dequeue, "tasks.dequeue",
                    lambda r: {"dequeued": bool(r.get("dequeued")), **_updated(r)})
