"""Schedule math as tables: triggers from ClearML-style fields, next fire times, catch-up plans."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from scheduler.timing import CatchUp, When, build_trigger, fire_times, next_fire, plan
from shipyard.errors import ConfigError


def T(text: str) -> float:
    """'2024-01-01 03:00' (UTC) -> epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def S(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


# 2024-01-01 is a Monday.
NEXT_FIRE = [
    # when, after, expected next fire (UTC)
    (When(cron="0 3 * * *"), "2024-01-01 02:59:59", "2024-01-01 03:00"),
    (When(cron="0 3 * * *"), "2024-01-01 03:00", "2024-01-02 03:00"),  # strictly after
    (When(cron="*/10 * * * 1-5"), "2024-01-05 23:55", "2024-01-08 00:00"),  # Friday night -> Monday
    (When(cron="0 9 * * 0"), "2024-01-01 00:00", "2024-01-07 09:00"),           # cron's 0 is Sunday
    (When(cron="0 9 * * 7"), "2024-01-01 00:00", "2024-01-07 09:00"),           # ... and so is 7
    (When(cron="0 9 * * */2"), "2024-01-01 10:00", "2024-01-02 09:00"),         # Sun, Tue, Thu, Sat
    (When(cron="0 9 * * sat,sun"), "2024-01-01 00:00", "2024-01-06 09:00"),
    (When(minute=15), "2024-01-01 00:07", "2024-01-01 00:15"),
    (When(minute=15), "2024-01-01 00:45", "2024-01-01 01:00"),
    (When(hour=2, minute=30), "2024-01-01 01:00", "2024-01-01 02:30"),
    (When(hour=2, minute=30), "2024-01-01 00:10", "2024-01-01 00:30"),
    (When(day=1, hour=5), "2024-01-01 06:00", "2024-01-02 05:00"),
    (When(weekdays=("monday", "friday"), hour=7), "2024-01-01 08:00", "2024-01-05 07:00"),
    (When(weekdays=("Mon",), hour=7, minute=30), "2024-01-01 07:29", "2024-01-01 07:30"),
    (When(month=1, day=5, hour=3), "2024-01-06 00:00", "2024-02-05 03:00"),
    (When(month=3), "2024-02-01 00:00", "2024-04-01 00:00"),  # every 3 months: Jan, Apr, Jul, Oct
    (When(day=1, hour=7, timezone="Europe/Berlin"), "2024-01-01 00:00", "2024-01-01 06:00"),  # CET
    (When(day=1, hour=7, timezone="Europe/Berlin"), "2024-07-01 00:00", "2024-07-01 05:00"),  # CEST
    # 02:30 does not exist in Berlin on 2024-03-31; APScheduler fires at 01:30 UTC (02:30 CET).
    (When(cron="30 2 * * *", timezone="Europe/Berlin"), "2024-03-30 12:00", "2024-03-31 01:30"),
    (When(at=T("2024-01-01 10:00")), "2024-01-01 09:00", "2024-01-01 10:00"),
    (When(at=T("2024-01-01 10:00")), "2024-01-01 10:00", None),
]


@pytest.mark.parametrize(("when", "after", "expected"), NEXT_FIRE)
def test_next_fire(when, after, expected):
    assert S(next_fire(build_trigger(when), T(after))) == expected


BAD_WHEN = [
    (When(), "needs cron, at"),
    (When(cron="0 3 * * *", hour=1), "only one of"),
    (When(cron="0 3 * * *", at=0.0), "only one of"),
    (When(minute=0), "every N minute"),
    (When(minute=60), "every N minute"),
    (When(hour=24), "every N hour"),
    (When(day=1, hour=24), "hour=24"),
    (When(weekdays=("funday",)), "unknown weekday"),
    (When(weekdays=("monday",), day=1), "cannot be combined"),
    (When(cron="every day"), "expected 5 fields"),
    (When(cron="61 * * * *"), "invalid schedule"),
    (When(cron="0 9 * * 8"), "0-7"),
    (When(cron="0 9 * * */0"), "bad step"),
    (When(minute=5, timezone="Mars/Olympus"), "unknown time zone"),
]


@pytest.mark.parametrize(("when", "message"), BAD_WHEN)
def test_bad_schedules_are_config_errors(when, message):
    with pytest.raises(ConfigError, match=message):
        build_trigger(when)


HOURLY = build_trigger(When(cron="0 * * * *"))
PLANS = [
    # last_planned, now, catch-up, recurring -> fire, skipped (HH:MM), next
    ("00:00", "01:00:10", CatchUp(), True, ["01:00"], [], "02:00"),                      # on time
    ("01:00:10", "01:30", CatchUp(), True, [], [], "02:00"),                             # nothing due
    ("00:00", "05:30", CatchUp("latest"), True, ["05:00"], ["01:00", "02:00", "03:00", "04:00"], "06:00"),
    ("00:00", "05:30", CatchUp("all"), True, ["01:00", "02:00", "03:00", "04:00", "05:00"], [], "06:00"),
    ("00:00", "05:30", CatchUp("all", max_runs=2), True, ["04:00", "05:00"], ["01:00", "02:00", "03:00"], "06:00"),
    ("00:00", "05:30", CatchUp("skip"), True, [], ["01:00", "02:00", "03:00", "04:00", "05:00"], "06:00"),
    ("00:00", "05:00:30", CatchUp("skip"), True, ["05:00"], ["01:00", "02:00", "03:00", "04:00"], "06:00"),
    ("00:00", "05:02", CatchUp("skip", grace_s=300), True, ["05:00"], ["01:00", "02:00", "03:00", "04:00"], "06:00"),
    ("00:30", "00:45", CatchUp(), False, [], [], "01:00"),                               # once, not yet
    ("00:30", "01:00:05", CatchUp(), False, ["01:00"], [], None),                        # once: fired, finished
    ("00:30", "03:10", CatchUp("latest"), False, ["01:00"], [], None),                   # once, late: latest
    ("00:30", "03:10", CatchUp("skip"), False, [], ["01:00"], None),                     # once, late: skipped
]


@pytest.mark.parametrize(("last", "now", "catch_up", "recurring", "fire", "skipped", "next_at"), PLANS)
def test_plan(last, now, catch_up, recurring, fire, skipped, next_at):
    decision = plan(HOURLY, last_planned=T(f"2024-01-01 {last}"), now=T(f"2024-01-01 {now}"),
                    catch_up=catch_up, recurring=recurring)
    assert [S(t)[11:] for t in decision.fire] == fire
    assert [S(t)[11:] for t in decision.skipped] == skipped
    assert (S(decision.next_at)[11:] if decision.next_at else None) == next_at
    assert decision.last_planned == T(f"2024-01-01 {now}")
    assert decision.skipped_range is None


def test_plan_after_a_very_long_outage_lists_only_the_tail():
    minutely = build_trigger(When(cron="* * * * *"))
    now = T("2024-01-01 00:00:30")
    decision = plan(minutely, last_planned=0.0, now=now, catch_up=CatchUp("latest"))
    assert [S(t) for t in decision.fire] == ["2024-01-01 00:00"]
    assert decision.skipped_range == (0.0, now - 7 * 86400)
    assert len(decision.skipped) == 7 * 1440 - 1


def test_fire_times_is_half_open():
    assert [S(t)[11:] for t in fire_times(HOURLY, T("2024-01-01 01:00"), T("2024-01-01 03:00"))] == ["02:00", "03:00"]
    assert len(fire_times(HOURLY, T("2024-01-01 00:00"), T("2024-01-02 00:00"), limit=5)) == 5


@pytest.mark.parametrize(("policy", "grace", "runs"), [("sometimes", 60, 10), ("latest", -1, 10), ("all", 60, 0)])
def test_bad_catch_up(policy, grace, runs):
    with pytest.raises(ConfigError):
        CatchUp(policy, grace, runs)
