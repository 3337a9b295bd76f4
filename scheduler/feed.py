"""The change feed a trigger reads: documents whose `last_change` (or `last_update`) moved.

One indexed range query per page (`tasks.get_all {last_change: ">=T", order_by: [last_change, id]}`),
never a scan of every task. The caller keeps the position; reading starts `overlap_s` before
it, because a transaction that stamped its change earlier can commit later (PostgreSQL), and
the state's de-duplication makes re-reading harmless.
"""
from __future__ import annotations

import re
from typing import Any

from scheduler.events import change_query
from scheduler.specs import TriggerSpec
from shipyard import clock
from shipyard.client.api import ApiClient
from shipyard.errors import ConfigError

__all__ = ["changes", "latest_change", "resolve_project"]

PAGE_SIZE = 500
MAX_PAGES = 200
"""At most this many pages per trigger per tick; the rest is read at the next tick."""
_ID = re.compile(r"^[a-f0-9]{32}$")


def _service(spec: TriggerSpec) -> str:
    return "models" if spec.kind == "model" else "tasks"


def changes(api: ApiClient, spec: TriggerSpec, after: float, page_size: int = PAGE_SIZE) -> list[dict[str, Any]]:
    """Documents matching the trigger's coarse filter whose change field is >= `after`, oldest first.

    Pages are keyset pages: each starts at the last change the previous one returned, so a
    document that changes while we read moves forward in the feed and is read later, never
    skipped (page numbers would shift under us). Only a full page of one single timestamp is
    walked by page number.
    """
    service, field = _service(spec), spec.change_field
    found: dict[tuple[str, str], dict[str, Any]] = {}
    bound, page = after, 0
    for _ in range(MAX_PAGES):
        rows = api.call(f"{service}.get_all", change_query(spec, bound, page, page_size))[service]
        found.update(((row["id"], str(row.get(field))), row) for row in rows)
        if len(rows) < page_size:
            break
        last = _stamp(rows[-1], field)
        bound, page = (last, 0) if last > bound else (bound, page + 1)
    return sorted(found.values(), key=lambda row: (_stamp(row, field), row["id"]))


def _stamp(row: dict[str, Any], field: str) -> float:
    try:
        return clock.parse_iso(str(row.get(field) or ""))
    except ValueError:
        return 0.0


def latest_change(api: ApiClient, spec: TriggerSpec) -> float:
    """The newest change the server has (its clock, not ours), or 0 when there is nothing."""
    service = _service(spec)
    field = spec.change_field
    rows = api.call(f"{service}.get_all", {"order_by": [f"-{field}"], "page": 0, "page_size": 1,
                                           "only_fields": [field], "search_hidden": True})[service]
    try:
        return clock.parse_iso(rows[0][field]) if rows else 0.0
    except (KeyError, ValueError):
        return 0.0


def resolve_project(api: ApiClient, project: str | None) -> str | None:
    """A project id for an id or an exact name; ConfigError if there is no such project."""
    if not project or _ID.match(project):
        return project
    rows = api.call("projects.get_all", {"name": f"^{re.escape(project)}$", "only_fields": ["id", "name"]})["projects"]
    exact = [row for row in rows if row.get("name") == project]
    if not exact:
        raise ConfigError(f"no project named {project!r}")
    return exact[0]["id"]
