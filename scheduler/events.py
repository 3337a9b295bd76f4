"""Trigger events: which changed task or model documents fire a trigger, and templates. Pure.

A changed document fires a trigger when it meets every condition of the `TriggerSpec`. The
event's `key` is what the state remembers to never fire twice for the same thing:

    status trigger        <task id>@<status>@<status_changed>   again if the task re-enters it
    tags, metric, model   <id>                                  once per task or model

Only changes after the trigger was first started (`since`) count, so adding a trigger never
fires for history.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.specs import TriggerSpec
from shipyard import clock
from shipyard.protocol import SystemTag

__all__ = ["Event", "change_query", "match", "substitute"]

TASK_FIELDS = ["id", "name", "status", "status_changed", "project", "tags", "system_tags", "last_change",
               "last_update"]
MODEL_FIELDS = ["id", "name", "ready", "project", "tags", "system_tags", "uri", "task", "last_update"]
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")


@dataclass(frozen=True)
class Event:
    key: str
    at: float
    context: Mapping[str, str]


def _ts(doc: Mapping[str, Any], field: str) -> float | None:
    try:
        return clock.parse_iso(str(doc.get(field) or ""))
    except ValueError:
        return None


def change_query(spec: TriggerSpec, after: float, page: int, page_size: int) -> dict[str, Any]:
    """The get_all body for one page of documents whose change field is at or after `after`.

    The server answers it from an index; the narrowing by project and status is only to send
    less back, `match` decides.
    """
    body: dict[str, Any] = {
        spec.change_field: f">={clock.iso(after)}",
        "order_by": [spec.change_field, "id"],
        "page": page,
        "page_size": page_size,
        "only_fields": (TASK_FIELDS + (["last_metrics"] if spec.metric else [])) if spec.kind == "task"
        else MODEL_FIELDS,
    }
    if spec.project:
        body["project"] = [spec.project]
    if spec.kind == "task" and spec.on_status:
        body["status"] = list(spec.on_status)
    return body


def _metric_crossed(spec: TriggerSpec, doc: Mapping[str, Any]) -> bool:
    for variants in (doc.get("last_metrics") or {}).values():
        for entry in (variants or {}).values():
            if entry.get("metric") != spec.metric or entry.get("variant") != spec.variant:
                continue
            if spec.sign == "max":
                value = entry.get("max_value")
                return value is not None and value >= spec.threshold
            value = entry.get("min_value")
            return value is not None and value <= spec.threshold
    return False


def _common(spec: TriggerSpec, doc: Mapping[str, Any]) -> bool:
    tags = set(doc.get("tags") or ())
    if spec.project and doc.get("project") != spec.project:
        return False
    if spec.name_match and not re.search(spec.name_match, str(doc.get("name") or ""), re.IGNORECASE):
        return False
    return set(spec.required_tags) <= tags and set(spec.on_tags) <= tags


def match(spec: TriggerSpec, doc: Mapping[str, Any], *, since: float) -> Event | None:
    """The event `doc` fires for `spec`, or None."""
    changed = _ts(doc, spec.change_field)
    if changed is None or changed <= since or not _common(spec, doc):
        return None
    system_tags = set(doc.get("system_tags") or ())
    doc_id = str(doc["id"])
    if spec.kind == "model":
        if (spec.on_publish and not doc.get("ready")) or (spec.on_archive and SystemTag.ARCHIVED not in system_tags):
            return None
        return Event(doc_id, changed, _context(spec, doc))
    if spec.exclude_dev and SystemTag.DEVELOPMENT in system_tags:
        return None
    if spec.metric and not _metric_crossed(spec, doc):
        return None
    if spec.on_status:
        status_changed = _ts(doc, "status_changed")
        if doc.get("status") not in spec.on_status or status_changed is None or status_changed <= since:
            return None
        return Event(f"{doc_id}@{doc['status']}@{doc['status_changed']}", status_changed, _context(spec, doc))
    return Event(doc_id, changed, _context(spec, doc))


def _context(spec: TriggerSpec, doc: Mapping[str, Any]) -> dict[str, str]:
    prefix = spec.kind
    context = {"trigger.name": spec.name, f"{prefix}.id": str(doc["id"]), f"{prefix}.name": str(doc.get("name") or ""),
               f"{prefix}.project": str(doc.get("project") or "")}
    if spec.kind == "task":
        context["task.status"] = str(doc.get("status") or "")
    else:
        context["model.url"] = str(doc.get("uri") or "")
        context["model.task"] = str(doc.get("task") or "")
    return context


def substitute(value: Any, context: Mapping[str, str]) -> Any:
    """`${name}` in strings (also inside lists and objects) replaced from `context`; unknown
    names are left as they are."""
    if isinstance(value, str):
        return _TEMPLATE.sub(lambda m: context.get(m.group(1), m.group(0)), value)
    if isinstance(value, Mapping):
        return {k: substitute(v, context) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [substitute(v, context) for v in value]
    return value
