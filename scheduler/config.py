"""The scheduler's config file (HOCON, so JSON works too): schedules, triggers, where state lives.

See configs/scheduler.conf for every key, documented. Errors name the item and the key; an
unknown key is an error (a typo must not silently disable a schedule).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pyhocon import ConfigFactory
from pyhocon.exceptions import ConfigException
from pyparsing import ParseBaseException

from scheduler.service import DEFAULT_POLL_S
from scheduler.specs import Action, ScheduleSpec, TriggerSpec
from scheduler.timing import CatchUp, When, zone
from shipyard.errors import ConfigError

__all__ = ["DEFAULT_STATE_DIR", "SchedulerConfig", "load_config", "parse_config"]

DEFAULT_STATE_DIR = Path("~/.shipyard/scheduler")
_ACTION_KEYS = {"task_id", "queue", "function", "target_project", "task_name", "parameters", "overrides",
                "reuse_task", "single_instance", "add_tag"}
_SCHEDULE_KEYS = _ACTION_KEYS | {"name", "cron", "at", "minute", "hour", "day", "weekdays", "month", "recurring",
                                 "timezone", "execute_immediately", "catch_up", "misfire_grace_s", "max_catch_up"}
_TRIGGER_KEYS = _ACTION_KEYS | {"name", "type", "project", "name_match", "on_status", "on_tags", "required_tags",
                                "on_publish", "on_archive", "metric", "variant", "threshold", "sign", "exclude_dev"}
_SETTINGS_KEYS = {"state_dir", "poll_interval_s", "timezone", "queue", "catch_up", "misfire_grace_s",
                  "max_catch_up"}


@dataclass(frozen=True)
class SchedulerConfig:
    state_dir: Path
    poll_interval_s: float
    schedules: tuple[ScheduleSpec, ...]
    triggers: tuple[TriggerSpec, ...]
    source: Path | None = None

    def find(self, name: str) -> ScheduleSpec | TriggerSpec | None:
        items: tuple[ScheduleSpec | TriggerSpec, ...] = (*self.schedules, *self.triggers)
        return next((item for item in items if item.name == name), None)


def load_config(path: Path, *, state_dir: Path | None = None) -> SchedulerConfig:
    try:
        tree = ConfigFactory.parse_file(str(path), resolve=True).as_plain_ordered_dict()
    except (ConfigException, ParseBaseException, OSError) as exc:
        raise ConfigError(f"cannot read scheduler config {path}: {exc}") from None
    config = replace(parse_config(tree, base_dir=path.parent), source=path)
    return config if state_dir is None else replace(config, state_dir=state_dir.expanduser())


def parse_config(tree: Mapping[str, Any], *, base_dir: Path = Path(".")) -> SchedulerConfig:
    """Build the config from a parsed tree; relative state_dir is relative to the file."""
    _reject_unknown("config", tree, {"scheduler", "schedules", "triggers"})
    settings = _mapping("scheduler", tree.get("scheduler") or {})
    _reject_unknown("scheduler", settings, _SETTINGS_KEYS)
    state_dir = Path(str(settings.get("state_dir") or DEFAULT_STATE_DIR)).expanduser()
    if not state_dir.is_absolute():
        state_dir = base_dir / state_dir
    poll = _number("scheduler", "poll_interval_s", settings.get("poll_interval_s", DEFAULT_POLL_S))
    if poll <= 0:
        raise ConfigError("scheduler.poll_interval_s must be > 0")
    schedules = tuple(_schedule(_mapping("schedule", item), settings) for item in _list("schedules", tree))
    triggers = tuple(_trigger(_mapping("trigger", item), settings) for item in _list("triggers", tree))
    specs: tuple[ScheduleSpec | TriggerSpec, ...] = (*schedules, *triggers)
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"names must be unique across schedules and triggers: {', '.join(duplicates)}")
    return SchedulerConfig(state_dir, poll, schedules, triggers)


def _schedule(item: Mapping[str, Any], settings: Mapping[str, Any]) -> ScheduleSpec:
    name = str(item.get("name") or "")
    where = f"schedule {name or '(no name)'}"
    _reject_unknown(where, item, _SCHEDULE_KEYS)
    merged = {**{k: v for k, v in settings.items() if k not in ("state_dir", "poll_interval_s")}, **item}
    at = item.get("at")
    tz_name = str(merged.get("timezone") or "UTC")
    when = When(
        cron=_optional_str(where, "cron", item.get("cron")),
        at=_timestamp(where, at, tz_name) if at is not None else None,
        minute=_optional_int(where, "minute", item.get("minute")), hour=_optional_int(where, "hour", item.get("hour")),
        day=_optional_int(where, "day", item.get("day")), month=_optional_int(where, "month", item.get("month")),
        weekdays=tuple(_str_list(where, "weekdays", item.get("weekdays"))),
        recurring=_bool(where, "recurring", item.get("recurring", at is None)),
        timezone=tz_name,
    )
    catch_up = CatchUp(policy=str(merged.get("catch_up", "latest")),
                       grace_s=_number(where, "misfire_grace_s", merged.get("misfire_grace_s", 60)),
                       max_runs=int(_number(where, "max_catch_up", merged.get("max_catch_up", 10))))
    return _named(where, lambda: ScheduleSpec(
        name, when, _action(where, item, settings),
        execute_immediately=_bool(where, "execute_immediately", item.get("execute_immediately", False)),
        catch_up=catch_up))


def _trigger(item: Mapping[str, Any], settings: Mapping[str, Any]) -> TriggerSpec:
    name = str(item.get("name") or "")
    where = f"trigger {name or '(no name)'}"
    _reject_unknown(where, item, _TRIGGER_KEYS)
    threshold = item.get("threshold")
    return _named(where, lambda: TriggerSpec(
        name, str(item.get("type") or "task"), _action(where, item, settings),
        project=_optional_str(where, "project", item.get("project")),
        name_match=_optional_str(where, "name_match", item.get("name_match")),
        on_status=tuple(_str_list(where, "on_status", item.get("on_status"))),
        on_tags=tuple(_str_list(where, "on_tags", item.get("on_tags"))),
        required_tags=tuple(_str_list(where, "required_tags", item.get("required_tags"))),
        on_publish=_bool(where, "on_publish", item.get("on_publish", False)),
        on_archive=_bool(where, "on_archive", item.get("on_archive", False)),
        metric=_optional_str(where, "metric", item.get("metric")),
        variant=_optional_str(where, "variant", item.get("variant")),
        threshold=_number(where, "threshold", threshold) if threshold is not None else None,
        sign=str(item.get("sign") or "min"),
        exclude_dev=_bool(where, "exclude_dev", item.get("exclude_dev", False))))


def _action(where: str, item: Mapping[str, Any], settings: Mapping[str, Any]) -> Action:
    add_tag = item.get("add_tag", True)
    if not isinstance(add_tag, (bool, str)):
        raise ConfigError(f"{where}: add_tag must be true, false or a tag")
    name = str(item.get("name") or "")
    task_id = _optional_str(where, "task_id", item.get("task_id"))
    return Action(
        task_id=task_id, function=_optional_str(where, "function", item.get("function")),
        queue=_optional_str(where, "queue", item.get("queue") or (settings.get("queue") if task_id else None)),
        target_project=_optional_str(where, "target_project", item.get("target_project")),
        task_name=_optional_str(where, "task_name", item.get("task_name")),
        parameters=_flat(where, "parameters", item.get("parameters") or {}, sep="/"),
        overrides=_flat(where, "overrides", item.get("overrides") or {}, sep="."),
        reuse_task=_bool(where, "reuse_task", item.get("reuse_task", False)),
        single_instance=_bool(where, "single_instance", item.get("single_instance", False)),
        add_tag=(add_tag if isinstance(add_tag, str) else name) if add_tag else None)


# --- typed reads ------------------------------------------------------------------------------


def _named(where: str, build: Any) -> Any:
    try:
        return build()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _reject_unknown(where: str, item: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(item) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"each {where} must be an object, got {value!r}")
    return value


def _list(key: str, tree: Mapping[str, Any]) -> list[Any]:
    value = tree.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list")
    return value


def _optional_str(where: str, key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: {key} must be a string")
    return str(value)


def _optional_int(where: str, key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {key} must be a whole number")
    return value


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}") from None


def _bool(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value


def _str_list(where: str, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return value


def _timestamp(where: str, value: Any, tz_name: str) -> float:
    """An ISO-8601 time; without an offset it is wall-clock time in the schedule's time zone."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}: at must be an ISO-8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(tz_name))
    return moment.timestamp()


def _flat(where: str, key: str, value: Any, *, sep: str) -> dict[str, Any]:
    """Nested objects flattened to `sep`-joined paths: {Args {lr: 1}} -> {"Args/lr": 1}."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {key} must be an object")
    out: dict[str, Any] = {}
    for name, item in value.items():
        if isinstance(item, Mapping) and item:
            out.update({f"{name}{sep}{sub}": v for sub, v in _flat(where, key, item, sep=sep).items()})
        else:
            out[str(name)] = item
    return out
