"""What schedules and triggers are: frozen values, validated when built, no I/O.

A `ScheduleSpec` fires on time (`timing.When`); a `TriggerSpec` fires on an event found in the
server's change feed. Both carry an `Action`: clone a task (or re-enqueue it) with parameter
overrides, or call a Python function.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from scheduler.timing import CatchUp, When, build_trigger
from shipyard import clock
from shipyard.errors import ConfigError
from shipyard.protocol import TaskStatus

__all__ = ["Action", "ScheduleSpec", "TriggerSpec", "TASK_STATUSES", "TRIGGER_KINDS"]

TASK_STATUSES = tuple(TaskStatus)  # every status a task can have, in the protocol's order
TRIGGER_KINDS = ("task", "model")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"name {name!r}: use letters, digits and _ . @ : + - (at most 128)")


@dataclass(frozen=True)
class Action:
    """What firing does. Exactly one of `task_id` (with `queue`) and `function`.

    `parameters` are hyperparameters of the clone as {"Section/name": value}; `overrides` change
    task fields by dotted path, e.g. {"script.branch": "main"}. Values may use templates such as
    `${task.id}` or `${schedule.planned}` (see `scheduler.events.substitute`).
    """

    task_id: str | None = None
    queue: str | None = None
    function: Callable[[Mapping[str, str]], Any] | str | None = None
    target_project: str | None = None
    task_name: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    reuse_task: bool = False
    single_instance: bool = False
    add_tag: str | None = None

    def __post_init__(self) -> None:
        if (self.task_id is None) == (self.function is None):
            raise ConfigError("give exactly one of task_id (a task to clone and enqueue) and function")
        if self.task_id is not None and not self.queue:
            raise ConfigError(f"task {self.task_id}: a queue is needed to enqueue it")
        if self.reuse_task and (self.parameters or self.overrides):
            raise ConfigError("parameters and overrides need a clone; they cannot be used with reuse_task")
        for key in self.parameters:
            if "/" not in key:
                raise ConfigError(f"parameter {key!r}: write it as Section/name, e.g. Args/{key}")
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    @property
    def describe(self) -> str:
        if self.function is not None:
            fn = self.function
            return f"call {fn if isinstance(fn, str) else getattr(fn, '__qualname__', repr(fn))}"
        verb = "enqueue" if self.reuse_task else "clone"
        return f"{verb} {self.task_id} -> {self.queue}"


@dataclass(frozen=True)
class ScheduleSpec:
    name: str
    when: When
    action: Action
    execute_immediately: bool = False
    catch_up: CatchUp = CatchUp()

    def __post_init__(self) -> None:
        _check_name(self.name)
        build_trigger(self.when)  # validate now, not at the first tick

    @property
    def owner(self) -> str:
        return f"schedule:{self.name}"

    @property
    def describe(self) -> str:
        w = self.when
        if w.cron:
            timing = f"cron '{w.cron}'"
        elif w.at is not None:
            timing = "once at " + clock.iso(w.at)
        else:
            parts = [f"{k}={getattr(w, k)}" for k in ("month", "day", "hour", "minute") if getattr(w, k) is not None]
            parts += [f"weekdays={','.join(w.weekdays)}"] if w.weekdays else []
            timing = " ".join(parts)
        once = "" if w.recurring else " (once)"
        return f"{timing} {w.timezone}{once}"


@dataclass(frozen=True)
class TriggerSpec:
    """Fire on changes of tasks or models that match every condition given.

    Task triggers: `on_status` (entering one of these statuses), `on_tags` (all present),
    `metric`/`variant` crossing `threshold` (sign "max": max_value >= threshold; "min":
    min_value <= threshold). Model triggers: `on_publish`, `on_tags`, `on_archive`. Both narrow
    with `project` (id or name), `name_match` (regex), `required_tags`; `exclude_dev` skips
    tasks that ran outside an agent.
    """

    name: str
    kind: str
    action: Action
    project: str | None = None
    name_match: str | None = None
    on_status: tuple[str, ...] = ()
    on_tags: tuple[str, ...] = ()
    required_tags: tuple[str, ...] = ()
    on_publish: bool = False
    on_archive: bool = False
    metric: str | None = None
    variant: str | None = None
    threshold: float | None = None
    sign: str = "min"
    exclude_dev: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.kind not in TRIGGER_KINDS:
            raise ConfigError(f"trigger {self.name}: type must be one of {', '.join(TRIGGER_KINDS)}")
        bad = [s for s in self.on_status if s not in TASK_STATUSES]
        if bad:
            raise ConfigError(f"trigger {self.name}: unknown status {', '.join(bad)} ({', '.join(TASK_STATUSES)})")
        if self.name_match:
            try:
                re.compile(self.name_match)
            except re.error as exc:
                raise ConfigError(f"trigger {self.name}: name_match: {exc}") from None
        self._check_conditions()

    def _check_conditions(self) -> None:
        metric_given = [x is not None for x in (self.metric, self.variant, self.threshold)]
        if any(metric_given) and not all(metric_given):
            raise ConfigError(f"trigger {self.name}: metric, variant and threshold go together")
        if self.sign not in ("min", "max"):
            raise ConfigError(f"trigger {self.name}: sign must be 'min' or 'max'")
        if self.kind == "task":
            if self.on_publish or self.on_archive:
                raise ConfigError(f"trigger {self.name}: on_publish/on_archive are for model triggers")
            if not (self.on_status or self.on_tags or self.metric):
                raise ConfigError(f"trigger {self.name}: give on_status, on_tags or metric/variant/threshold")
        else:
            if self.on_status or self.metric or self.exclude_dev:
                raise ConfigError(f"trigger {self.name}: on_status/metric/exclude_dev are for task triggers")
            if not (self.on_publish or self.on_tags or self.on_archive):
                raise ConfigError(f"trigger {self.name}: give on_publish, on_tags or on_archive")

    @property
    def owner(self) -> str:
        return f"trigger:{self.name}"

    @property
    def change_field(self) -> str:
        """The indexed field whose changes the trigger follows. Metrics move `last_update`
        (reports do not count as a change); status and tags move `last_change`."""
        return "last_update" if self.kind == "model" or self.metric else "last_change"

    @property
    def describe(self) -> str:
        parts = [f"{self.kind}s"]
        parts += [f"status in {','.join(self.on_status)}"] if self.on_status else []
        parts += [f"tags {','.join(self.on_tags)}"] if self.on_tags else []
        parts += ["published"] if self.on_publish else []
        parts += ["archived"] if self.on_archive else []
        if self.metric:
            op = ">=" if self.sign == "max" else "<="
            parts.append(f"{self.metric}/{self.variant} {op} {self.threshold:g}")
        parts += [f"project {self.project}"] if self.project else []
        return " ".join(parts)
