"""`TriggerScheduler`: clone-and-enqueue a task (or call a function) when something happens.

    triggers = TriggerScheduler(api, store)
    triggers.add_task_trigger(name="retrain", schedule_task_id=base_id, schedule_queue="default",
                              trigger_project="data", trigger_on_status=["completed"],
                              task_parameters={"Args/dataset_task": "${task.id}"})
    triggers.start()

Each `step()` reads, per trigger, the documents changed since its cursor (`feed.changes`: an
indexed range query, not a rescan), keeps those that fire (`events.match`), and writes the new
fires together with the advanced cursor in one transaction; then it carries out pending fires.
A trigger seen for the first time starts at the server's newest change: history never fires.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from scheduler import feed
from scheduler.events import match
from scheduler.launcher import Launcher, Outcome
from scheduler.specs import Action, TriggerSpec
from scheduler.state import Cursor, Fire, NewFire, StateStore
from shipyard import clock
from shipyard.client.api import ApiClient
from shipyard.errors import ConfigError, ServerError

__all__ = ["OVERLAP_S", "TriggerScheduler"]

log = logging.getLogger(__name__)

OVERLAP_S = 10.0
"""How far before its position a trigger re-reads changes (late commits; duplicates are ignored)."""


class TriggerScheduler:
    def __init__(self, api: ApiClient, store: StateStore, *, overlap_s: float = OVERLAP_S):
        self.api = api
        self.store = store
        self.overlap_s = overlap_s
        self.launcher = Launcher(api, store)
        self._triggers: dict[str, TriggerSpec] = {}
        self._resolved: dict[str, TriggerSpec] = {}

    # --- configuration -------------------------------------------------------------------------

    def add(self, spec: TriggerSpec) -> TriggerSpec:
        if spec.name in self._triggers:
            raise ConfigError(f"a trigger named {spec.name!r} exists already")
        self._triggers[spec.name] = spec
        return spec

    def add_task_trigger(self, *, name: str, schedule_task_id: str | None = None,
                         schedule_function: Callable[..., Any] | str | None = None, schedule_queue: str | None = None,
                         trigger_project: str | None = None, trigger_name: str | None = None,
                         trigger_on_status: Iterable[str] = (), trigger_on_tags: Iterable[str] = (),
                         trigger_required_tags: Iterable[str] = (), trigger_exclude_dev_tasks: bool = False,
                         trigger_on_metric: str | None = None, trigger_on_variant: str | None = None,
                         trigger_on_threshold: float | None = None, trigger_on_sign: str = "min",
                         **action: Any) -> TriggerSpec:
        """ClearML's `TriggerScheduler.add_task_trigger`. `action` takes target_project,
        single_instance, reuse_task, task_parameters, task_overrides, add_tag."""
        return self.add(TriggerSpec(
            name, "task", _action(name, schedule_task_id, schedule_function, schedule_queue, action),
            project=trigger_project, name_match=trigger_name, on_status=tuple(trigger_on_status),
            on_tags=tuple(trigger_on_tags), required_tags=tuple(trigger_required_tags),
            exclude_dev=trigger_exclude_dev_tasks, metric=trigger_on_metric, variant=trigger_on_variant,
            threshold=trigger_on_threshold, sign={"maximum": "max", "minimum": "min"}.get(trigger_on_sign,
                                                                                            trigger_on_sign)))

    def add_model_trigger(self, *, name: str, schedule_task_id: str | None = None,
                          schedule_function: Callable[..., Any] | str | None = None, schedule_queue: str | None = None,
                          trigger_project: str | None = None, trigger_name: str | None = None,
                          trigger_on_publish: bool = False, trigger_on_tags: Iterable[str] = (),
                          trigger_on_archive: bool = False, trigger_required_tags: Iterable[str] = (),
                          **action: Any) -> TriggerSpec:
        """ClearML's `TriggerScheduler.add_model_trigger` (templates: ${model.id}, ${model.url}...)."""
        return self.add(TriggerSpec(
            name, "model", _action(name, schedule_task_id, schedule_function, schedule_queue, action),
            project=trigger_project, name_match=trigger_name, on_publish=trigger_on_publish,
            on_tags=tuple(trigger_on_tags), on_archive=trigger_on_archive,
            required_tags=tuple(trigger_required_tags)))

    def get_triggers(self) -> list[TriggerSpec]:
        return list(self._triggers.values())

    # --- running -------------------------------------------------------------------------------

    def step(self) -> list[tuple[Fire, Outcome]]:
        """Read each trigger's new changes, record what fires, carry out pending fires."""
        for spec in self._triggers.values():
            try:
                self._read(self._resolve(spec))
            except ServerError as exc:  # one trigger's bad filter must not stop the others
                log.error("Scheduler %s: reading changes failed: %s", spec.owner, exc)
        return self.launcher.run_pending({spec.owner: spec.action for spec in self._triggers.values()})

    def next_wakeup(self) -> float | None:
        return None  # triggers are polled every tick

    def start(self) -> None:
        from scheduler.service import SchedulerService
        from shipyard.signals import Shutdown

        SchedulerService([self], shutdown=Shutdown().install()).run()

    def _resolve(self, spec: TriggerSpec) -> TriggerSpec:
        """The spec with its project name turned into an id (asked once)."""
        if spec.name not in self._resolved:
            self._resolved[spec.name] = dataclasses.replace(spec, project=feed.resolve_project(self.api, spec.project))
        return self._resolved[spec.name]

    def _read(self, spec: TriggerSpec) -> None:
        cursor = self.store.cursor(spec.owner)
        if cursor is None:
            start = feed.latest_change(self.api, spec)
            self.store.record(spec.owner, cursor=Cursor(since=start, position=start))
            log.info("Scheduler %s: added (%s); changes after %s count", spec.owner, spec.describe, clock.iso(start))
            return
        docs = feed.changes(self.api, spec, cursor.position - self.overlap_s)
        events = [event for event in (match(spec, doc, since=cursor.since) for doc in docs) if event]
        position = max([cursor.position] + [_changed(doc, spec.change_field) for doc in docs])
        fires = [NewFire(event.key, event.at, context=event.context) for event in events]
        written = self.store.record(spec.owner, fires, cursor=dataclasses.replace(cursor, position=position))
        for fire in written:
            log.info("Scheduler %s: fires for %s", spec.owner, fire.key)


def _action(name: str, task_id: str | None, function: Any, queue: str | None, extra: Mapping[str, Any]) -> Action:
    known = {"target_project", "single_instance", "reuse_task", "task_parameters", "task_overrides", "add_tag"}
    unknown = set(extra) - known
    if unknown:
        raise ConfigError(f"trigger {name}: unknown option(s) {', '.join(sorted(unknown))}")
    add_tag = extra.get("add_tag", True)
    return Action(task_id=task_id, function=function, queue=queue, target_project=extra.get("target_project"),
                  parameters=extra.get("task_parameters") or {}, overrides=extra.get("task_overrides") or {},
                  reuse_task=bool(extra.get("reuse_task")), single_instance=bool(extra.get("single_instance")),
                  add_tag=(add_tag if isinstance(add_tag, str) else name) if add_tag else None)


def _changed(doc: Mapping[str, Any], field: str) -> float:
    try:
        return clock.parse_iso(str(doc.get(field) or ""))
    except ValueError:
        return 0.0
