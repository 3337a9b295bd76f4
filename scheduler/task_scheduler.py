"""`TaskScheduler`: clone-and-enqueue a task (or call a function) on a schedule.

    scheduler = TaskScheduler(api, store)
    scheduler.add_task(schedule_task_id=base_id, queue="default", hour=3, minute=0, name="nightly",
                       task_parameters={"Args/epochs": 10})
    scheduler.start()                      # blocks; or call step() from your own loop

Each `step()` reads the clock once, asks `timing.plan` what is due for every schedule, writes
that decision with the schedule's new mark in one transaction, then carries out the pending
fires (`Launcher`). A schedule seen for the first time starts from now: runs before it are
not "missed" (except `execute_immediately`, which fires once, ever).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from scheduler.launcher import Launcher, Outcome
from scheduler.specs import Action, ScheduleSpec
from scheduler.state import Fire, FireStatus, NewFire, ScheduleMark, StateStore
from scheduler.timing import CatchUp, Plan, When, build_trigger, next_fire, plan
from shipyard import clock
from shipyard.client.api import ApiClient
from shipyard.errors import ConfigError

__all__ = ["TaskScheduler"]

log = logging.getLogger(__name__)

DEFAULT_CATCH_UP = CatchUp()


class TaskScheduler:
    def __init__(self, api: ApiClient, store: StateStore):
        self.store = store
        self.launcher = Launcher(api, store)
        self._schedules: dict[str, ScheduleSpec] = {}

    # --- configuration -------------------------------------------------------------------------

    def add(self, spec: ScheduleSpec) -> ScheduleSpec:
        if spec.name in self._schedules:
            raise ConfigError(f"a schedule named {spec.name!r} exists already")
        self._schedules[spec.name] = spec
        return spec

    def add_task(self, *, schedule_task_id: str | None = None,
                 schedule_function: Callable[..., Any] | str | None = None, queue: str | None = None,
                 name: str | None = None, target_project: str | None = None,
                 minute: int | None = None, hour: int | None = None, day: int | None = None,
                 weekdays: Iterable[str] | None = None, month: int | None = None, cron: str | None = None,
                 recurring: bool = True, execute_immediately: bool = False, reuse_task: bool = False,
                 task_parameters: Mapping[str, Any] | None = None, task_overrides: Mapping[str, Any] | None = None,
                 single_instance: bool = False, add_tag: bool | str = True, timezone: str = "UTC",
                 catch_up: CatchUp = DEFAULT_CATCH_UP) -> ScheduleSpec:
        """ClearML's `TaskScheduler.add_task`, plus `cron`, `timezone` and `catch_up`."""
        name = name or schedule_task_id or getattr(schedule_function, "__name__", None)
        if not name:
            raise ConfigError("a schedule needs a name")
        action = Action(task_id=schedule_task_id, function=schedule_function, queue=queue,
                        target_project=target_project, parameters=task_parameters or {},
                        overrides=task_overrides or {}, reuse_task=reuse_task, single_instance=single_instance,
                        add_tag=(add_tag if isinstance(add_tag, str) else name) if add_tag else None)
        when = When(cron=cron, minute=minute, hour=hour, day=day, weekdays=tuple(weekdays or ()), month=month,
                    recurring=recurring, timezone=timezone)
        return self.add(ScheduleSpec(name, when, action, execute_immediately=execute_immediately, catch_up=catch_up))

    def remove_task(self, name: str) -> bool:
        return self._schedules.pop(name, None) is not None

    def get_scheduled_tasks(self) -> list[ScheduleSpec]:
        return list(self._schedules.values())

    # --- running -------------------------------------------------------------------------------

    def step(self) -> list[tuple[Fire, Outcome]]:
        """Decide what is due now, record it, carry out pending fires."""
        now = clock.now()
        for spec in self._schedules.values():
            self._decide(spec, now)
        return self.launcher.run_pending({spec.owner: spec.action for spec in self._schedules.values()})

    def next_wakeup(self) -> float | None:
        """The earliest time a schedule fires next (None: nothing left to fire)."""
        times = [mark.next_at for mark in map(self.store.schedule, (s.owner for s in self._schedules.values()))
                 if mark is not None and mark.next_at is not None and not mark.finished]
        return min(times, default=None)

    def start(self) -> None:
        """Run until SIGTERM/SIGINT (ClearML's name; see `scheduler.service`)."""
        from scheduler.service import SchedulerService
        from shipyard.signals import Shutdown

        SchedulerService([self], shutdown=Shutdown().install()).run()

    def _decide(self, spec: ScheduleSpec, now: float) -> None:
        trigger = build_trigger(spec.when)
        mark = self.store.schedule(spec.owner)
        if mark is None:
            fires = [_fire(spec, f"immediate@{clock.iso(now)}", now)] if spec.execute_immediately else []
            self.store.record(spec.owner, fires, schedule=ScheduleMark(now, next_fire(trigger, now)))
            log.info("Scheduler %s: added (%s); next run %s", spec.owner, spec.describe, _when(next_fire(trigger, now)))
            return
        if mark.finished or now <= mark.last_planned:
            return
        decision = plan(trigger, last_planned=mark.last_planned, now=now, catch_up=spec.catch_up,
                        recurring=spec.when.recurring)
        fires = [_fire(spec, clock.iso(t), t) for t in decision.fire] + _skipped(spec, decision)
        self.store.record(spec.owner, fires, schedule=ScheduleMark(decision.last_planned, decision.next_at,
                                                                   finished=decision.next_at is None))


def _fire(spec: ScheduleSpec, key: str, planned: float) -> NewFire:
    context = {"schedule.name": spec.name, "schedule.planned": clock.iso(planned), "schedule.key": key}
    return NewFire(key, planned, context=context)


def _skipped(spec: ScheduleSpec, decision: Plan) -> list[NewFire]:
    why = f"missed while not running; catch_up={spec.catch_up.policy}"
    rows = [NewFire(clock.iso(t), t, FireStatus.SKIPPED, why) for t in decision.skipped]
    if decision.skipped_range:
        start, end = decision.skipped_range
        rows.append(NewFire(f"missed:{clock.iso(start)}..{clock.iso(end)}", end, FireStatus.SKIPPED,
                            "too many missed runs to list one by one"))
    if rows:
        log.warning("Scheduler %s: %d missed run(s) skipped (%s)", spec.owner, len(rows), why)
    return rows


def _when(ts: float | None) -> str:
    return clock.iso(ts) if ts is not None else "never"
