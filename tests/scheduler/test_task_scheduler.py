"""TaskScheduler decisions over restarts, on a patched clock, with function actions (no server)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from scheduler.state import FireStatus, StateStore
from scheduler.task_scheduler import TaskScheduler
from scheduler.timing import CatchUp
from shipyard import clock


def T(hhmm: str) -> float:
    return datetime.fromisoformat(f"2024-01-01 {hhmm}").replace(tzinfo=timezone.utc).timestamp()


class Clock:
    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(clock, "now", lambda: self.now)

    def at(self, hhmm: str) -> None:
        self.now = T(hhmm)


@pytest.fixture()
def fake_clock(monkeypatch):
    return Clock(monkeypatch)


class Recorder:
    def __init__(self):
        self.calls: list[str] = []
        self.fail_with: BaseException | None = None

    def __call__(self, context):
        self.calls.append(context["schedule.planned"][11:16])
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error


def scheduler(state_dir, fn, **options):
    """A fresh process, as far as the scheduler can tell: a new object on the reopened state file."""
    tasks = TaskScheduler(api=None, store=StateStore.open(state_dir))
    tasks.add_task(name="hourly", schedule_function=fn, cron="0 * * * *", **options)
    return tasks


def test_first_start_is_a_baseline_then_each_run_fires_once(tmp_path, fake_clock):
    fn = Recorder()
    fake_clock.at("00:30")
    tasks = scheduler(tmp_path, fn)
    assert tasks.step() == [] and fn.calls == []          # runs before the first start are not missed
    assert tasks.next_wakeup() == T("01:00")
    fake_clock.at("01:00:02")
    fired = tasks.step()
    assert fn.calls == ["01:00"] and [o.status for _f, o in fired] == [FireStatus.FIRED]
    tasks.step()
    assert fn.calls == ["01:00"]
    assert tasks.next_wakeup() == T("02:00")


RESTARTS = [
    # catch-up policy, calls after a restart at 05:30 (down since 01:10), skipped rows
    (CatchUp("latest"), ["05:00"], 3),
    (CatchUp("all"), ["02:00", "03:00", "04:00", "05:00"], 0),
    (CatchUp("all", max_runs=2), ["04:00", "05:00"], 2),
    (CatchUp("skip"), [], 4),
    (CatchUp("skip", grace_s=3600), ["05:00"], 3),
]


@pytest.mark.parametrize(("catch_up", "calls", "skipped"), RESTARTS)
def test_a_restart_neither_repeats_nor_forgets(tmp_path, fake_clock, catch_up, calls, skipped):
    fn = Recorder()
    fake_clock.at("00:30")
    scheduler(tmp_path, fn, catch_up=catch_up).step()
    fake_clock.at("01:00:01")
    scheduler(tmp_path, fn, catch_up=catch_up).step()
    assert fn.calls == ["01:00"]
    fake_clock.at("01:10")
    scheduler(tmp_path, fn, catch_up=catch_up).step()  # restarted before the next run: nothing again
    assert fn.calls == ["01:00"]
    fake_clock.at("05:30")                              # down from 01:10 to 05:30
    restarted = scheduler(tmp_path, fn, catch_up=catch_up)
    restarted.step()
    assert fn.calls == ["01:00", *calls]
    scheduler(tmp_path, fn, catch_up=catch_up).step()  # and once more: nothing new
    assert fn.calls == ["01:00", *calls]
    assert restarted.store.count("schedule:hourly").get("skipped", 0) == skipped


def test_execute_immediately_fires_once_ever(tmp_path, fake_clock):
    fn = Recorder()
    fake_clock.at("00:30")
    scheduler(tmp_path, fn, execute_immediately=True).step()
    scheduler(tmp_path, fn, execute_immediately=True).step()
    assert fn.calls == ["00:30"]


def test_a_fire_interrupted_mid_call_is_carried_out_by_the_next_process(tmp_path, fake_clock):
    fn = Recorder()
    fake_clock.at("00:30")
    scheduler(tmp_path, fn).step()
    fake_clock.at("01:00:01")
    fn.fail_with = KeyboardInterrupt()  # the process dies inside the call
    with pytest.raises(KeyboardInterrupt):
        scheduler(tmp_path, fn).step()
    again = scheduler(tmp_path, fn)
    again.step()
    assert fn.calls == ["01:00", "01:00"]  # a function cannot be looked for: at least once
    [fire] = again.store.history("schedule:hourly")
    assert fire.status is FireStatus.FIRED and fire.attempts == 2


def test_a_failing_function_is_recorded_not_retried(tmp_path, fake_clock):
    fn = Recorder()
    fake_clock.at("00:30")
    scheduler(tmp_path, fn).step()
    fake_clock.at("01:00:01")
    fn.fail_with = ValueError("bad input")
    tasks = scheduler(tmp_path, fn)
    tasks.step()
    tasks.step()
    [fire] = tasks.store.history("schedule:hourly")
    assert fn.calls == ["01:00"]
    assert fire.status is FireStatus.FAILED and fire.detail == "ValueError: bad input"


def test_a_schedule_that_is_not_recurring_finishes(tmp_path, fake_clock):
    fn = Recorder()
    fake_clock.at("00:30")
    tasks = scheduler(tmp_path, fn, recurring=False)
    tasks.step()
    fake_clock.at("03:00:01")
    tasks.step()
    fake_clock.at("09:00:00")
    tasks.step()
    assert fn.calls == ["01:00"]  # late: the latest (only) run fires, then it is finished
    assert tasks.next_wakeup() is None
