"""What `scheduler list` and `scheduler show` print, built from the config and the state.

`statuses` is a function (task ids -> {id: status}) so this stays testable without a server.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from scheduler.config import SchedulerConfig
from scheduler.specs import ScheduleSpec, TriggerSpec
from scheduler.state import Fire, StateStore
from scheduler.timing import build_trigger, next_fire
from shipyard import clock

__all__ = ["Row", "describe_item", "fire_lines", "summary_rows"]

Statuses = Callable[[list[str]], dict[str, str]]


class Row(NamedTuple):
    name: str
    kind: str
    when: str
    next: str
    last: str
    result: str


def _iso(ts: float | None) -> str:
    return clock.iso(ts)[:19].replace("T", " ") + "Z" if ts is not None else "-"


def _next(item: ScheduleSpec | TriggerSpec, store: StateStore) -> str:
    if isinstance(item, TriggerSpec):
        cursor = store.cursor(item.owner)
        return f"on change (read to {_iso(cursor.position)})" if cursor else "not started"
    mark = store.schedule(item.owner)
    if mark is None:
        return f"{_iso(next_fire(build_trigger(item.when), clock.now()))} (not started)"
    return "finished" if mark.finished or mark.next_at is None else _iso(mark.next_at)


def _result(fire: Fire | None, statuses: dict[str, str]) -> str:
    if fire is None:
        return "-"
    if fire.task_id:
        return f"{fire.status.value} {fire.task_id} ({statuses.get(fire.task_id, '?')})"
    return f"{fire.status.value} {fire.detail}".strip()


def summary_rows(config: SchedulerConfig, store: StateStore, statuses: Statuses) -> list[Row]:
    items: list[ScheduleSpec | TriggerSpec] = [*config.schedules, *config.triggers]
    last = {item.name: next(iter(store.history(item.owner, 1)), None) for item in items}
    known = statuses([fire.task_id for fire in last.values() if fire and fire.task_id])
    return [Row(item.name, "trigger" if isinstance(item, TriggerSpec) else "schedule", item.describe,
                _next(item, store), _last_planned(last[item.name]), _result(last[item.name], known))
            for item in items]


def _last_planned(fire: Fire | None) -> str:
    return _iso(fire.planned) if fire else "-"


def describe_item(item: ScheduleSpec | TriggerSpec, store: StateStore) -> list[tuple[str, str]]:
    lines = [("name", item.name), ("kind", "trigger" if isinstance(item, TriggerSpec) else "schedule"),
             ("on" if isinstance(item, TriggerSpec) else "when", item.describe), ("action", item.action.describe)]
    if isinstance(item, ScheduleSpec):
        mark = store.schedule(item.owner)
        catch_up = item.catch_up
        lines.append(("catch up", f"{catch_up.policy} (grace {catch_up.grace_s:g}s, at most {catch_up.max_runs})"))
        lines.append(("decided up to", _iso(mark.last_planned) if mark else "-"))
    else:
        cursor = store.cursor(item.owner)
        lines.append(("since", _iso(cursor.since) if cursor else "-"))
    lines.append(("next", _next(item, store)))
    counts = store.count(item.owner)
    lines.append(("fires", ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"))
    return lines


def fire_lines(history: Sequence[Fire], statuses: Statuses) -> list[str]:
    if not history:
        return ["(no fires yet)"]
    known = statuses([fire.task_id for fire in history if fire.task_id])
    lines = [f"{'PLANNED':19s}  {'STATUS':8s}  {'TASK':32s}  {'TASK STATUS':12s}  DETAIL"]
    for fire in history:
        task = fire.task_id or "-"
        lines.append(f"{_iso(fire.planned):19s}  {fire.status.value:8s}  {task:32s}  "
                     f"{known.get(fire.task_id, '-') if fire.task_id else '-':12s}  {fire.detail}")
    return lines
