"""Schedule math: when a schedule fires, what is due now, and what was missed. Pure.

Time is always passed in as epoch seconds (the loop asks `shipyard.clock.now()` once per tick),
so every function here is tested with tables of cases. The calendar arithmetic itself (time
zones, DST, month lengths, weekday names) is APScheduler's: `build_trigger` turns a `When` into
one of its triggers and only `get_next_fire_time` is ever called on it.

ClearML's familiar fields map onto cron like this (the largest unit given is "every N", the
smaller ones are "at"), aligned to the wall clock so a restart never shifts the grid:

    minute=15                          */15 * * * *        every 15 minutes
    hour=2, minute=30                  30 */2 * * *        every 2 hours at :30
    day=1, hour=5                      0 5 */1 * *         every day at 05:00
    weekdays=[monday, friday], hour=7  0 7 * * mon,fri     Mondays and Fridays at 07:00
    month=1, day=5, hour=3             0 3 5 */1 *         the 5th of every month at 03:00
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from shipyard.errors import ConfigError

__all__ = ["CATCH_UP_POLICIES", "CatchUp", "Plan", "When", "build_trigger", "fire_times", "next_fire", "plan", "zone"]

WEEKDAYS = {"monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
            "saturday": "sat", "sunday": "sun"}
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
CATCH_UP_POLICIES = ("latest", "all", "skip")
MAX_ENUMERATED = 20_000
"""Past this many missed runs (a minutely schedule down for two weeks), they are not enumerated
one by one: only the last `TAIL_S` before now are, the rest are reported as one skipped range."""
TAIL_S = 7 * 86400.0
_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class When:
    """The timing part of a schedule: a cron string, a one-shot time, or ClearML-style fields."""

    cron: str | None = None
    at: float | None = None
    minute: int | None = None
    hour: int | None = None
    day: int | None = None
    weekdays: tuple[str, ...] = ()
    month: int | None = None
    recurring: bool = True
    timezone: str = "UTC"


@dataclass(frozen=True)
class CatchUp:
    """What to do with runs whose time passed while the scheduler was not running.

    A run late by at most `grace_s` is simply on time. Older ones are "missed":
    `latest` fires one run for all of them (the most recent), `all` fires each (at most
    `max_runs`, the most recent ones), `skip` fires none. Whatever is not fired is recorded
    as skipped in the state, never silently dropped.
    """

    policy: str = "latest"
    grace_s: float = 60.0
    max_runs: int = 10

    def __post_init__(self) -> None:
        if self.policy not in CATCH_UP_POLICIES:
            raise ConfigError(f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, not {self.policy!r}")
        if self.grace_s < 0 or self.max_runs < 1:
            raise ConfigError("misfire_grace_s must be >= 0 and max_catch_up >= 1")


@dataclass(frozen=True)
class Plan:
    """The decision for one schedule at one tick."""

    fire: tuple[float, ...]
    """Planned times to fire now, oldest first."""
    skipped: tuple[float, ...]
    """Missed times the catch-up policy leaves out."""
    skipped_range: tuple[float, float] | None
    """Missed times too many to enumerate (MAX_ENUMERATED): all in (after, until], not counted."""
    last_planned: float
    """The new high-water mark: every time up to it has been decided."""
    next_at: float | None
    """The next time to fire after now; None when the schedule is finished."""


def zone(name: str) -> timezone | ZoneInfo:
    """A time zone by IANA name ("UTC", "Europe/Berlin"); ConfigError if unknown."""
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}") from None


def _every(value: int | None, unit: str, low: int, high: int) -> str:
    if value is None or not low <= value <= high:
        raise ConfigError(f"{unit}={value!r}: as the largest unit given it means 'every N {unit}s' ({low}-{high})")
    return f"*/{value}"


def _at(value: int | None, unit: str, low: int, high: int, default: int = 0) -> int:
    if value is None:
        return default
    if not low <= value <= high:
        raise ConfigError(f"{unit}={value!r}: must be {low}-{high}")
    return value


def _cron_fields(when: When) -> dict[str, str | int]:
    """ClearML's minute/hour/day/weekdays/month fields as APScheduler cron fields."""
    if when.weekdays:
        days = []
        for name in when.weekdays:
            short = WEEKDAYS.get(name.lower(), name.lower())
            if short not in WEEKDAYS.values():
                raise ConfigError(f"unknown weekday {name!r} (monday ... sunday)")
            days.append(short)
        if when.day is not None or when.month is not None:
            raise ConfigError("weekdays cannot be combined with day or month")
        return {"day_of_week": ",".join(days), "hour": _at(when.hour, "hour", 0, 23),
                "minute": _at(when.minute, "minute", 0, 59)}
    if when.month is not None:
        return {"month": _every(when.month, "month", 1, 12), "day": _at(when.day, "day", 1, 31, default=1),
                "hour": _at(when.hour, "hour", 0, 23), "minute": _at(when.minute, "minute", 0, 59)}
    if when.day is not None:
        return {"day": _every(when.day, "day", 1, 31), "hour": _at(when.hour, "hour", 0, 23),
                "minute": _at(when.minute, "minute", 0, 59)}
    if when.hour is not None:
        return {"hour": _every(when.hour, "hour", 1, 23), "minute": _at(when.minute, "minute", 0, 59)}
    if when.minute is not None:
        return {"minute": _every(when.minute, "minute", 1, 59)}
    raise ConfigError("a schedule needs cron, at, or one of minute/hour/day/weekdays/month")


def _crontab(expr: str) -> dict[str, str]:
    """A 5-field crontab as APScheduler cron fields.

    APScheduler 3 numbers weekdays from Monday=0 (cron: Sunday=0 or 7), so numeric weekdays
    become names. Unlike cron, a restricted day-of-month AND day-of-week must both match.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"cron {expr!r}: expected 5 fields (minute hour day month weekday)")
    minute, hour, day, month, weekday = fields
    return {"minute": minute, "hour": hour, "day": day, "month": month, "day_of_week": _cron_weekdays(weekday),
            "second": "0"}


def _cron_weekdays(field: str) -> str:
    if field == "*":
        return field
    days: list[str] = []
    for item in field.lower().split(","):
        body, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ConfigError(f"cron weekday field {field!r}: bad step {step!r}")
        if body == "*":
            low, high = 0, 6
        else:
            numeric = re.fullmatch(r"(\d+)(?:-(\d+))?", body)
            if not numeric:
                days.append(item)  # names (mon-fri) mean the same to APScheduler
                continue
            low = int(numeric.group(1))
            high = int(numeric.group(2)) if numeric.group(2) else (6 if step else low)  # "1/2": 1 to the end
        if not 0 <= low <= high <= 7:
            raise ConfigError(f"cron weekday field {field!r}: use 0-7 (0 and 7 are Sunday) or names")
        days += [_CRON_DAYS[d] for d in range(low, high + 1, int(step or 1))]
    return ",".join(dict.fromkeys(days))


def build_trigger(when: When) -> BaseTrigger:
    """The APScheduler trigger for `when`; ConfigError if it makes no sense."""
    tz = zone(when.timezone)
    fields = any(getattr(when, name) is not None for name in ("minute", "hour", "day", "month")) or when.weekdays
    if (when.cron is not None) + (when.at is not None) + bool(fields) > 1:
        raise ConfigError("give only one of cron, at, or the minute/hour/day/weekdays/month fields")
    try:
        if when.at is not None:
            return DateTrigger(datetime.fromtimestamp(when.at, tz=tz), timezone=tz)
        if when.cron is not None:
            return CronTrigger(timezone=tz, **_crontab(when.cron))
        return CronTrigger(timezone=tz, second=0, **_cron_fields(when))
    except ValueError as exc:
        raise ConfigError(f"invalid schedule: {exc}") from None


def next_fire(trigger: BaseTrigger, after: float) -> float | None:
    """The first fire time strictly after `after`, or None if the trigger never fires again."""
    moment = datetime.fromtimestamp(after, tz=timezone.utc)
    if isinstance(trigger, DateTrigger):
        run_at = trigger.run_date.timestamp()
        return run_at if run_at > after else None
    found = trigger.get_next_fire_time(None, moment + _EPSILON)
    return found.timestamp() if found is not None else None


def fire_times(trigger: BaseTrigger, after: float, until: float, limit: int | None = None) -> list[float]:
    """Fire times t with after < t <= until, oldest first (the first `limit` of them)."""
    times: list[float] = []
    cursor = after
    while limit is None or len(times) < limit:
        found = next_fire(trigger, cursor)
        if found is None or found > until:
            return times
        times.append(found)
        cursor = found
    return times


def plan(trigger: BaseTrigger, *, last_planned: float, now: float, catch_up: CatchUp,
         recurring: bool = True) -> Plan:
    """Decide which runs in (last_planned, now] fire now, which are skipped, and when to wake next.

    A schedule that is not recurring is finished (`next_at` None) once its one run is decided,
    fired or skipped.
    """
    skipped_range = None
    due = fire_times(trigger, last_planned, now, limit=MAX_ENUMERATED + 1 if recurring else 1)
    if len(due) > MAX_ENUMERATED:
        tail_start = max(now - TAIL_S, due[MAX_ENUMERATED - 1])
        skipped_range = (last_planned, tail_start)
        due = fire_times(trigger, tail_start, now)
    on_time = [t for t in due if now - t <= catch_up.grace_s]
    missed = [t for t in due if now - t > catch_up.grace_s]
    if catch_up.policy == "latest":
        fire = due[-1:]
    elif catch_up.policy == "all":
        fire = missed[-catch_up.max_runs:] + on_time
    else:
        fire = on_time
    skipped = tuple(t for t in due if t not in fire)
    high_water = max(last_planned, now)
    finished = not recurring and bool(due or skipped_range)
    next_at = None if finished else next_fire(trigger, high_water)
    return Plan(tuple(fire), skipped, skipped_range, high_water, next_at)
