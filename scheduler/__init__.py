"""Schedules, triggers and jobs: ClearML's TaskScheduler, TriggerScheduler and ClearmlJob, restart-safe.

    timing     schedule math on APScheduler triggers (pure)     events   which changes fire (pure)
    specs      ScheduleSpec, TriggerSpec, Action (values)       feed     the change-feed queries
    state      SQLite state: marks, cursors, fires              launcher carries out fires, once
    job        Job: clone, launch, wait, metrics, abort         service  the loop
    task_scheduler / trigger_scheduler  the ClearML-style APIs  config / report / cli  `shipyard scheduler`
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Action": "scheduler.specs", "CatchUp": "scheduler.timing", "Job": "scheduler.job",
    "MetricValue": "scheduler.job", "ScheduleSpec": "scheduler.specs", "StateStore": "scheduler.state",
    "TaskScheduler": "scheduler.task_scheduler", "TriggerScheduler": "scheduler.trigger_scheduler",
    "TriggerSpec": "scheduler.specs", "When": "scheduler.timing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Exports load on first use, so `shipyard --help` does not import APScheduler."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scheduler' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
