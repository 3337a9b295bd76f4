"""The task status machine, as the reference ClearML server defines it. Pure data and logic."""
from __future__ import annotations

CREATED, QUEUED, IN_PROGRESS, STOPPED = "created", "queued", "in_progress", "stopped"
PUBLISHED, PUBLISHING, CLOSED, FAILED, COMPLETED, UNKNOWN = (
    "published", "publishing", "closed", "failed", "completed", "unknown")

ALL = (CREATED, QUEUED, IN_PROGRESS, STOPPED, PUBLISHED, PUBLISHING, CLOSED, FAILED, COMPLETED, UNKNOWN)

TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({QUEUED, IN_PROGRESS}),
    QUEUED: frozenset({CREATED, IN_PROGRESS, STOPPED}),
    IN_PROGRESS: frozenset({STOPPED, FAILED, CREATED, COMPLETED}),
    STOPPED: frozenset({CLOSED, CREATED, FAILED, QUEUED, IN_PROGRESS, PUBLISHED, PUBLISHING, COMPLETED}),
    CLOSED: frozenset({CREATED, FAILED, PUBLISHED, PUBLISHING, STOPPED}),
    FAILED: frozenset({CREATED, STOPPED, PUBLISHED, QUEUED}),
    PUBLISHING: frozenset({PUBLISHED}),
    PUBLISHED: frozenset(),
    COMPLETED: frozenset({PUBLISHED, IN_PROGRESS, CREATED}),
    UNKNOWN: frozenset(ALL),
}

# Statuses after which a task no longer runs.
FINAL = frozenset({STOPPED, PUBLISHED, CLOSED, FAILED, COMPLETED})


def can_transition(current: str, new: str, *, force: bool = False) -> bool:
    if force or current == new:
        return True
    return new in TRANSITIONS.get(current, frozenset())


TASK_TYPES = ("training", "testing", "inference", "data_processing", "application", "monitor",
              "controller", "optimizer", "service", "qc", "custom")
