"""Carry out decided fires, exactly once as far as the server can tell.

Every fire is first a `pending` row in the state (see `scheduler.state`). Carrying it out:

    clone action     clone the base task with a system tag `shipyard-fire:<hash of owner+key>`,
                     set parameters and overrides, enqueue
    reuse_task       reset the task if needed, tag it the same way, enqueue
    function         call it with the fire's context

The attempt is counted in the state before it is made. A fire with earlier attempts (the
process died, or the server was away) first looks for its tagged task: found and enqueued,
it is done; found as a draft, it is finished (parameters again, enqueue); not found, it starts
over. So a crash between "clone" and "record" neither loses the run nor makes a second clone.
A function cannot be looked for: after a crash mid-call it runs again (at least once).

The server being unreachable (or refusing our credentials) leaves the fire pending for the next
tick; the server refusing the fire itself (a deleted base task, a bad parameter) marks it failed
with the reason.
"""
from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.events import substitute
from scheduler.job import Job, queue_field
from scheduler.specs import Action
from scheduler.state import Fire, FireStatus, StateStore
from shipyard.client.api import ApiClient
from shipyard.errors import AuthError, ConfigError, ServerUnreachable, ShipyardError
from shipyard.protocol import TaskStatus

__all__ = ["FIRE_TAG_PREFIX", "Launcher", "Outcome", "fire_tag", "import_function"]

log = logging.getLogger(__name__)

FIRE_TAG_PREFIX = "shipyard-fire:"
ACTIVE_STATUSES = (TaskStatus.QUEUED, TaskStatus.IN_PROGRESS)


def fire_tag(owner: str, key: str) -> str:
    """The system tag that marks the task one fire created (stable across restarts)."""
    return FIRE_TAG_PREFIX + hashlib.sha1(f"{owner}\n{key}".encode()).hexdigest()[:20]


def import_function(path: str) -> Callable[[Mapping[str, str]], Any]:
    """"package.module:function" -> the function."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"function {path!r}: write it as package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"function {path!r}: {exc}") from None
    if not callable(target):
        raise ConfigError(f"function {path!r} is not callable")
    return target


@dataclass(frozen=True)
class Outcome:
    status: FireStatus
    task_id: str | None = None
    detail: str = ""


class Launcher:
    def __init__(self, api: ApiClient, store: StateStore):
        self.api = api
        self.store = store

    def run_pending(self, actions: Mapping[str, Action]) -> list[tuple[Fire, Outcome]]:
        """Carry out every pending fire of the given owners, oldest first. Stops at the first
        unreachable-server error (they stay pending for the next call)."""
        done = []
        for fire in self.store.pending(actions):
            retry = self.store.begin_attempt(fire.id) > 0
            try:
                outcome = self._carry_out(fire, actions[fire.owner], retry)
            except (ServerUnreachable, AuthError) as exc:  # not the fire's fault: try it again later
                log.warning("Scheduler %s: fire %s stays pending: %s", fire.owner, fire.key, exc)
                break
            except ShipyardError as exc:
                outcome = Outcome(FireStatus.FAILED, None, str(exc))
            self.store.finish(fire.id, outcome.status, task_id=outcome.task_id, detail=outcome.detail)
            level = logging.WARNING if outcome.status is FireStatus.FAILED else logging.INFO
            log.log(level, "Scheduler %s: %s %s %s", fire.owner, outcome.status.value, outcome.task_id or "",
                    outcome.detail)
            done.append((fire, outcome))
        return done

    def _carry_out(self, fire: Fire, action: Action, retry: bool) -> Outcome:
        context = dict(fire.context)
        if action.function is not None:
            return self._call(action, context, retry)
        blocker = self._running_instance(fire) if action.single_instance else None
        if blocker:
            return Outcome(FireStatus.SKIPPED, None, f"single instance: {blocker}")
        if action.reuse_task:
            return self._reenqueue(fire, action, retry)
        return self._clone(fire, action, context, retry)

    def _call(self, action: Action, context: dict[str, str], retry: bool) -> Outcome:
        function = action.function
        target = import_function(function) if isinstance(function, str) else function
        if retry:
            log.warning("Scheduler: calling %s again after an interrupted attempt", action.describe)
        try:
            result = target(context)  # type: ignore[misc]
        except Exception as exc:  # the user's code: any failure is the fire's result, not ours
            log.exception("Scheduler: %s raised", action.describe)
            return Outcome(FireStatus.FAILED, None, f"{type(exc).__name__}: {exc}")
        return Outcome(FireStatus.FIRED, None, "" if result is None else str(result)[:500])

    def _running_instance(self, fire: Fire) -> str:
        """'task X is in_progress' if the owner's previous task is still queued or running."""
        previous = [f for f in self.store.history(fire.owner, limit=50)
                    if f.id < fire.id and f.status is FireStatus.FIRED and f.task_id]
        if not previous:
            return ""
        task_id = max(previous, key=lambda f: f.id).task_id
        rows = self.api.call("tasks.get_all", {"id": [task_id], "only_fields": ["status"]})["tasks"]
        status = rows[0].get("status") if rows else None
        return f"task {task_id} is {status}" if status in ACTIVE_STATUSES else ""

    def _clone(self, fire: Fire, action: Action, context: dict[str, str], retry: bool) -> Outcome:
        assert action.task_id is not None and action.queue is not None
        tag = fire_tag(fire.owner, fire.key)
        parameters = substitute(dict(action.parameters), context)
        overrides = substitute(dict(action.overrides), context)
        found = self._tagged_clone(action.task_id, tag) if retry else None
        if found and found["status"] != TaskStatus.CREATED:
            return Outcome(FireStatus.FIRED, found["id"], f"recovered: {found['status']}")
        if found:
            job = Job(self.api, found["id"])
            job.set_parameters(parameters)
            job.set_overrides(overrides)
        else:
            owner_tag = [action.add_tag] if action.add_tag else []
            job = Job.clone(self.api, action.task_id, parameter_override=parameters, task_overrides=overrides,
                            name=action.task_name and substitute(action.task_name, context), tags=owner_tag,
                            system_tags=[tag], target_project=action.target_project)
            self.store.set_task(fire.id, job.task_id())
        self.api.call("tasks.enqueue", {"task": job.task_id(), **queue_field(action.queue),
                                        "status_reason": f"shipyard {fire.owner}"})
        return Outcome(FireStatus.FIRED, job.task_id(), f"enqueued to {action.queue}")

    def _tagged_clone(self, base_task_id: str, tag: str) -> dict[str, Any] | None:
        rows = self.api.call("tasks.get_all", {"parent": [base_task_id], "system_tags": [tag],
                                               "only_fields": ["id", "status"], "search_hidden": True})["tasks"]
        return rows[0] if rows else None

    def _reenqueue(self, fire: Fire, action: Action, retry: bool) -> Outcome:
        assert action.task_id is not None and action.queue is not None
        tag = fire_tag(fire.owner, fire.key)
        task = self.api.call("tasks.get_by_id", {"task": action.task_id})["task"]
        tags = task.get("system_tags") or []
        if retry and tag in tags and task.get("status") != TaskStatus.CREATED:
            return Outcome(FireStatus.FIRED, action.task_id, f"recovered: {task.get('status')}")
        if task.get("status") in ACTIVE_STATUSES:
            return Outcome(FireStatus.SKIPPED, action.task_id, f"task is still {task.get('status')}")
        if task.get("status") != TaskStatus.CREATED:
            self.api.call("tasks.reset", {"task": action.task_id, "force": True})
        marked = [t for t in tags if not t.startswith(FIRE_TAG_PREFIX)] + [tag]
        self.api.call("tasks.edit", {"task": action.task_id, "system_tags": marked, "force": True})
        self.api.call("tasks.enqueue", {"task": action.task_id, **queue_field(action.queue),
                                        "status_reason": f"shipyard {fire.owner}"})
        return Outcome(FireStatus.FIRED, action.task_id, f"enqueued to {action.queue}")
