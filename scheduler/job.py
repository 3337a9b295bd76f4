"""`Job`: one run of a task, driven through the REST API, with ClearML's ClearmlJob method names.

    job = Job.clone(api, base_task_id, parameter_override={"Args/lr": 0.1})
    job.launch("default")
    if job.wait(timeout=3600):
        print(job.status(), job.get_metric("loss", "total"))
    else:
        job.abort()

The constructor does no I/O: `Job(api, task_id)` wraps a task that exists; `Job.clone` makes
one. Status reads go to the server every time (`status(force=False)` reuses the last answer).
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from shipyard import clock
from shipyard.client.api import ApiClient
from shipyard.errors import ConfigError, ServerError
from shipyard.protocol import FINAL, SystemTag, TaskStatus

__all__ = ["FINAL_STATUSES", "Job", "MetricValue", "nested_overrides"]

log = logging.getLogger(__name__)

FINAL_STATUSES = FINAL  # shipyard.protocol's; the name stays exported
_ID = re.compile(r"^[a-f0-9]{32}$")
DEFAULT_POLL_S = 5.0


class MetricValue(NamedTuple):
    last: float | None
    min: float | None
    max: float | None


def nested_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """{"script.branch": "main"} -> {"script": {"branch": "main"}}, the shape tasks.edit takes."""
    out: dict[str, Any] = {}
    for path, value in overrides.items():
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {path!r} conflicts with another override of {part!r}")
            node = child
        node[parts[-1]] = value
    return out


def queue_field(queue: str) -> dict[str, str]:
    """tasks.enqueue's way to name a queue: by id when it looks like one, else by name."""
    return {"queue": queue} if _ID.match(queue) else {"queue_name": queue}


class Job:
    """A task run by an agent: launch it, wait for it, read its status and metrics, abort it."""

    def __init__(self, api: ApiClient, task_id: str, *, sleep: Callable[[float], None] = time.sleep):
        self.api = api
        self._task_id = task_id
        self._sleep = sleep
        self._last: dict[str, Any] = {}

    @classmethod
    def clone(cls, api: ApiClient, base_task_id: str, *, parameter_override: Mapping[str, Any] | None = None,
              task_overrides: Mapping[str, Any] | None = None, name: str | None = None,
              tags: Iterable[str] = (), system_tags: Iterable[str] = (), target_project: str | None = None,
              parent: str | None = None) -> Job:
        """Clone `base_task_id` (a draft in `created` status), then apply parameters and overrides."""
        base = api.call("tasks.get_by_id", {"task": base_task_id})["task"]
        body: dict[str, Any] = {
            "task": base_task_id, "new_task_parent": parent or base_task_id,
            "new_task_tags": _merged(base.get("tags") or [], tags),
            "new_task_system_tags": _merged([t for t in base.get("system_tags") or []
                                             if t not in (SystemTag.DEVELOPMENT, SystemTag.ARCHIVED)], system_tags),
        }
        if name:
            body["new_task_name"] = name
        if target_project:
            body["new_task_project" if _ID.match(target_project) else "new_project_name"] = target_project
        job = cls(api, api.call("tasks.clone", body)["id"])
        job.set_parameters(parameter_override or {})
        job.set_overrides(task_overrides or {})
        return job

    # --- ClearML's names ----------------------------------------------------------------------

    def task_id(self) -> str:
        return self._task_id

    def set_parameters(self, parameters: Mapping[str, Any]) -> None:
        """Hyperparameters as {"Section/name": value}; merged into the task's (draft only)."""
        if not parameters:
            return
        items = []
        for key, value in parameters.items():
            section, _, name = key.partition("/")
            if not name:
                raise ConfigError(f"parameter {key!r}: write it as Section/name")
            items.append({"section": section, "name": name, "value": "" if value is None else str(value)})
        self.api.call("tasks.edit_hyper_params", {"task": self._task_id, "hyperparams": items})

    def set_overrides(self, overrides: Mapping[str, Any]) -> None:
        """Task fields by dotted path, e.g. {"script.branch": "main"} (draft only)."""
        if overrides:
            self.api.call("tasks.edit", {"task": self._task_id, **nested_overrides(overrides)})

    def launch(self, queue_name: str) -> bool:
        """Enqueue the task; False if the server refuses (e.g. it is not a draft)."""
        try:
            self.api.call("tasks.enqueue", {"task": self._task_id, **queue_field(queue_name)})
        except ServerError as exc:
            log.warning("Job %s: enqueue to %s refused: %s", self._task_id, queue_name, exc)
            return False
        return True

    def abort(self) -> None:
        """Stop the task: dequeued if waiting, else its agent terminates it."""
        self.api.call("tasks.stop", {"task": self._task_id, "status_reason": "aborted by Job.abort"})

    def delete(self) -> None:
        self.api.call("tasks.delete", {"task": self._task_id, "force": True})

    def status(self, force: bool = True) -> str:
        return str(self._refresh(force).get("status") or TaskStatus.UNKNOWN)

    def status_message(self) -> str:
        return str(self._refresh(True).get("status_message") or "")

    def launched(self) -> bool:
        return self.status() not in (TaskStatus.CREATED, TaskStatus.UNKNOWN)

    def is_pending(self) -> bool:
        return self.status() in (TaskStatus.CREATED, TaskStatus.QUEUED)

    def is_running(self) -> bool:
        return self.status() == TaskStatus.IN_PROGRESS

    def is_stopped(self) -> bool:
        """Finished for any reason (ClearML's meaning of 'stopped')."""
        return self.status() in FINAL_STATUSES

    def is_completed(self) -> bool:
        return self.status() in (TaskStatus.COMPLETED, TaskStatus.PUBLISHED)

    def is_failed(self) -> bool:
        return self.status() == TaskStatus.FAILED

    def is_aborted(self) -> bool:
        return self.status() == TaskStatus.STOPPED

    def wait(self, timeout: float | None = None, pool_period: float = DEFAULT_POLL_S) -> bool:
        """Block until the task finishes; True if it did, False when `timeout` seconds passed."""
        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            if self.is_stopped():
                return True
            if deadline is not None and clock.monotonic() >= deadline:
                return False
            pause = pool_period if deadline is None else max(0.0, min(pool_period, deadline - clock.monotonic()))
            self._sleep(pause)

    def iterations(self) -> int:
        return int(self._refresh(True).get("last_iteration") or 0)

    def last_metrics(self) -> dict[str, dict[str, MetricValue]]:
        """{title: {series: MetricValue(last, min, max)}} from the task's last reported scalars."""
        found: dict[str, dict[str, MetricValue]] = {}
        for variants in (self._refresh(True).get("last_metrics") or {}).values():
            for entry in (variants or {}).values():
                value = MetricValue(entry.get("value"), entry.get("min_value"), entry.get("max_value"))
                found.setdefault(str(entry.get("metric")), {})[str(entry.get("variant"))] = value
        return found

    def get_metric(self, title: str, series: str) -> MetricValue | None:
        return self.last_metrics().get(title, {}).get(series)

    def _refresh(self, force: bool) -> dict[str, Any]:
        if force or not self._last:
            fields = ["status", "status_message", "status_reason", "last_iteration", "last_metrics"]
            rows = self.api.call("tasks.get_all", {"id": [self._task_id], "only_fields": fields})["tasks"]
            self._last = rows[0] if rows else {"status": TaskStatus.UNKNOWN}
        return self._last

    def __repr__(self) -> str:
        return f"Job({self._task_id})"


def _merged(existing: Iterable[str], extra: Iterable[str]) -> list[str]:
    out = list(existing)
    out += [tag for tag in extra if tag and tag not in out]
    return out
