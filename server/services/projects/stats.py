"""projects.get_all_ex: the listing the web UI's projects page reads, with statistics.

`include_stats` adds to each project its tasks' counts per status, total run time, tasks
completed in the last 24 hours and the latest start, for active and/or archived tasks
(`stats_for_state`), over the project and its subprojects (`stats_with_children`), plus
`sub_projects` [{id, name}]. All of it comes from ONE grouped query over the tasks' indexed
columns (ix_tasks_project_stats covers it), whatever the number of projects; the subtree sums
are done here on its few rows. `check_own_contents` adds `own_tasks`/`own_models` (one grouped
query each). `parent` is answered as {id, name}. `children_type` lists only the projects that
hold pipelines, datasets or reports (or have them below), with stats on those alone;
`active_users` only those with tasks by these users, with stats on their tasks alone;
`include_dataset_stats` the latest dataset version's file count and size. `scroll_id`/`size`/
`refresh_scroll` page as tasks.get_all_ex does (server/services/scroll.py: one id per scroll), and
`user` and `company` are answered as {id, name} (tasks/people.py).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import case, func, or_, select

from server import errors, query
from server.rpc.registry import CallContext, Request, endpoint
from server.services import scroll
from server.services.projects.crud import check_request, listed
from server.services.tasks import people
from server.storage import tables as t
from shipyard import clock
from shipyard.protocol import SystemTag, TaskStatus, TaskType

STATES = ("active", "archived")
DAY_S = 24 * 3600.0
_STATUS_NAMES = [str(s) for s in TaskStatus]
_NOT_RECENTLY_COMPLETED = {TaskStatus.QUEUED, TaskStatus.IN_PROGRESS, TaskStatus.FAILED}
# children_type: only the projects where (or under which) pipelines, datasets or reports live;
# a pipeline's or dataset's project carries that system tag, a report is a task of type report.
_CHILDREN_TAG = {"pipeline": "pipeline", "dataset": "dataset"}
_CHILDREN_STATS_FILTER: dict[str, dict] = {"pipeline": {"type": [TaskType.CONTROLLER]}, "report": {"type": ["report"]}}


@dataclass
class Section:
    """One project's tasks in one state (active or archived)."""

    status_count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_STATUS_NAMES, 0))
    total_runtime: float = 0.0
    completed_tasks_24h: int = 0
    last_task_run: float | None = None

    def add(self, other: "Section") -> None:
        for status, count in other.status_count.items():
            self.status_count[status] = self.status_count.get(status, 0) + count
        self.total_runtime += other.total_runtime
        self.completed_tasks_24h += other.completed_tasks_24h
        if other.last_task_run is not None:
            self.last_task_run = max(self.last_task_run or other.last_task_run, other.last_task_run)

    def answer(self) -> dict:
        return {"status_count": dict(self.status_count), "total_tasks": sum(self.status_count.values()),
                "total_runtime": int(self.total_runtime), "completed_tasks_24h": self.completed_tasks_24h,
                "last_task_run": clock.iso(self.last_task_run) if self.last_task_run is not None else None}


@dataclass
class Own:
    """What the grouped query found for one project's own tasks."""

    sections: dict[str, Section] = field(default_factory=lambda: {s: Section() for s in STATES})
    last_change: float | None = None


def _status_filter(stats_filter: dict) -> list[Any]:
    """include_stats_filter on the indexed columns: {"status": [...], "type": [...]}, '-x' excludes."""
    clauses = []
    for key in ("status", "type"):
        values = stats_filter.get(key) or []
        values = [values] if isinstance(values, str) else values
        column = t.tasks.c[key]
        wanted = [v for v in values if isinstance(v, str) and not v.startswith("-")]
        unwanted = [v[1:] for v in values if isinstance(v, str) and v.startswith("-")]
        if wanted:
            clauses.append(column.in_(wanted))
        if unwanted:
            clauses.append(column.not_in(unwanted))
    return clauses


def _users_clause(users: list[str] | None) -> list[Any]:
    """Tasks created by these users (`active_users`); read from the documents, so only asked for."""
    return [t.tasks.c.doc["user"].as_string().in_(users)] if users else []


def grouped_stats(conn, project_ids: list[str], stats_filter: dict, users: list[str] | None = None) -> dict[str, Own]:
    """The one query: per (project, status, archived) the count, run time, recent completions,
    latest start and latest change."""
    c = t.tasks.c
    recent = clock.now() - DAY_S
    stmt = (select(c.project, c.status, c.archived, func.count(),
                   func.sum(case((c.completed > c.started, c.completed - c.started), else_=0.0)),
                   func.sum(case((c.completed > recent, 1), else_=0)),
                   func.max(c.started), func.max(c.last_change))
            .where(c.project.in_(project_ids), *_status_filter(stats_filter), *_users_clause(users))
            .group_by(c.project, c.status, c.archived))
    found: dict[str, Own] = defaultdict(Own)
    for project, status, archived, count, runtime, recent_done, started, changed in conn.execute(stmt):
        own = found[project]
        section = own.sections["archived" if archived else "active"]
        key = status if status in section.status_count else "unknown"
        section.add(Section(status_count={key: count}, total_runtime=runtime or 0.0,
                            completed_tasks_24h=0 if status in _NOT_RECENTLY_COMPLETED else int(recent_done or 0),
                            last_task_run=started))
        own.last_change = max(own.last_change or changed, changed) if changed is not None else own.last_change
    return found


def _subtrees(all_projects: list[dict], search_hidden: bool) -> dict[str, list[dict]]:
    """Each project's subprojects at any depth (hidden ones only with search_hidden)."""
    below: dict[str, list[dict]] = defaultdict(list)
    for project in all_projects:
        if search_hidden or SystemTag.HIDDEN not in (project.get("system_tags") or []):
            for ancestor in project.get("path") or []:
                below[ancestor].append(project)
    return below


def _stats_for(ids: Iterable[str], own: dict[str, Own], states: tuple[str, ...]) -> tuple[dict, float | None]:
    total = {s: Section() for s in states}
    last_change: float | None = None
    for project_id in ids:
        found = own.get(project_id)
        if found is None:
            continue
        for state in states:
            total[state].add(found.sections[state])
        if found.last_change is not None:
            last_change = max(last_change or found.last_change, found.last_change)
    return {s: total[s].answer() for s in states}, last_change


def _states(req: Request) -> tuple[str, ...]:
    state = req.body.get("stats_for_state", "active")
    if state is None:
        return STATES
    if state not in STATES:
        raise errors.validation(f"field 'stats_for_state' must be one of active, archived, got {state!r}")
    return (state,)


def _add_stats(ctx: CallContext, req: Request, projects: list[dict], all_projects: list[dict]) -> None:
    states = _states(req)
    with_children = req.flag("stats_with_children", True)
    kind = req.text("children_type")
    hidden = req.flag("search_hidden") or kind in ("pipeline", "report")
    stats_filter = req.mapping("include_stats_filter") or _CHILDREN_STATS_FILTER.get(kind or "", {})
    below = _subtrees(all_projects, hidden)
    subtrees = {p["id"]: below.get(p["id"], []) for p in projects}
    ids = {p["id"] for p in projects} | ({c["id"] for kids in subtrees.values() for c in kids} if with_children else set())
    with ctx.store.tx() as conn:
        own = grouped_stats(conn, sorted(ids), stats_filter, req.str_list("active_users"))
    for project in projects:
        kids = subtrees[project["id"]]
        tree = [project["id"], *([k["id"] for k in kids] if with_children else [])]
        project["stats"], last_change = _stats_for(tree, own, states)
        project["sub_projects"] = [{"id": k["id"], "name": k["name"]} for k in sorted(kids, key=_by_name)]
        if last_change is not None and "last_update" in project:
            project["last_update"] = max(project["last_update"], clock.iso(last_change))


def _by_name(doc: dict) -> str:
    return doc.get("name") or ""


def _own_counts(ctx: CallContext, table: Any, ids: list[str]) -> dict[str, int]:
    stmt = select(table.c.project, func.count()).where(table.c.project.in_(ids)).group_by(table.c.project)
    with ctx.store.tx() as conn:
        return {project: int(count) for project, count in conn.execute(stmt)}


def _own_task_counts(ctx: CallContext, req: Request, ids: list[str]) -> dict[str, int]:
    states = _states(req)
    c = t.tasks.c
    stmt = select(c.project, func.count()).where(c.project.in_(ids)).group_by(c.project)
    if states == ("active",):
        stmt = stmt.where(or_(c.archived.is_(None), c.archived.is_(False)))
    elif states == ("archived",):
        stmt = stmt.where(c.archived.is_(True))
    with ctx.store.tx() as conn:
        return {project: int(count) for project, count in conn.execute(stmt)}


def _add_own_contents(ctx: CallContext, req: Request, projects: list[dict]) -> None:
    ids = [p["id"] for p in projects]
    tasks, models = _own_task_counts(ctx, req, ids), _own_counts(ctx, t.models, ids)
    for project in projects:
        project["own_tasks"] = tasks.get(project["id"], 0)
        project["own_models"] = models.get(project["id"], 0)


def _add_dataset_stats(ctx: CallContext, projects: list[dict]) -> None:
    """include_dataset_stats: the file count and size of the latest non-archived task with a
    runtime in each project (a dataset version keeps them in runtime.ds_file_count/ds_total_size)."""
    c = t.tasks.c
    stmt = (select(c.project, c.doc["runtime"])
            .where(c.project.in_([p["id"] for p in projects]), or_(c.archived.is_(None), c.archived.is_(False)))
            .order_by(c.project, c.last_update))
    with ctx.store.tx() as conn:
        latest = {project: runtime for project, runtime in conn.execute(stmt) if isinstance(runtime, dict) and runtime}
    for project in projects:
        runtime = latest.get(project["id"])
        project["dataset_stats"] = {"file_count": runtime.get("ds_file_count", 0),
                                    "total_size": runtime.get("ds_total_size", 0)} if runtime else None


def _with_parent_object(docs: list[dict], by_id: dict[str, dict]) -> list[dict]:
    def joined(doc: dict) -> dict:
        parent = by_id.get(doc.get("parent") or "")
        return {**doc, "parent": {"id": parent["id"], "name": parent["name"]}} if parent else doc
    return [joined(d) for d in docs]


def _mark_hidden(projects: list[dict]) -> None:
    for project in projects:
        if SystemTag.HIDDEN in (project.get("system_tags") or []):
            project["hidden"] = True


def _with_ancestors(selected: set[str], all_projects: list[dict]) -> set[str]:
    return selected | {a for p in all_projects if p["id"] in selected for a in p.get("path") or []}


def _projects_with_tasks(ctx: CallContext, *where: Any) -> set[str]:
    c = t.tasks.c
    with ctx.store.tx() as conn:
        return {r[0] for r in conn.execute(select(c.project).distinct().where(c.project.isnot(None), *where))}


def _children_type_ids(ctx: CallContext, kind: str, all_projects: list[dict]) -> set[str]:
    tag = _CHILDREN_TAG.get(kind)
    if tag:
        return _with_ancestors({p["id"] for p in all_projects if tag in (p.get("system_tags") or [])}, all_projects)
    return _with_ancestors(_projects_with_tasks(ctx, t.tasks.c.type == "report"), all_projects)


def _allowed_ids(ctx: CallContext, req: Request, all_projects: list[dict]) -> set[str] | None:
    """The projects children_type and active_users leave (None: no such restriction)."""
    kind, users = req.text("children_type"), req.str_list("active_users")
    allowed = _children_type_ids(ctx, kind, all_projects) if kind else None
    if users:
        by_users = _with_ancestors(_projects_with_tasks(ctx, *_users_clause(users)), all_projects)
        allowed = by_users if allowed is None else allowed & by_users
    return allowed


def _restrict(ctx: CallContext, req: Request, all_projects: list[dict]) -> bool:
    """Narrow the request's `id` to the allowed projects; False when none is left."""
    allowed = _allowed_ids(ctx, req, all_projects)
    if allowed is None:
        return True
    asked = req.str_list("id")
    req.body["id"] = sorted(allowed.intersection(asked) if asked else allowed)
    return bool(req.body["id"])


def _with_people(ctx: CallContext, projects: list[dict]) -> list[dict]:
    """`user` and `company` as {id, name}, as the tasks' _ex answers show them (the web UI reads
    `company.id` to tell the team's projects from read-only examples, `user.name` for owners)."""
    with ctx.store.tx() as conn:
        users = people.refs(conn, {p["user"] for p in projects if isinstance(p.get("user"), str)})
    return [{**p, **_person_fields(p, users)} for p in projects]


def _person_fields(project: dict, users: dict[str, dict]) -> dict:
    out = {}
    if isinstance(project.get("user"), str):
        out["user"] = users.get(project["user"], {"id": project["user"], "name": project["user"]})
    if isinstance(project.get("company"), str):
        out["company"] = people.company_ref(project["company"])
    return out


@endpoint("projects.get_all_ex")
def get_all_ex(ctx: CallContext, req: Request) -> dict:
    check_request("projects.get_all_ex", req)
    with ctx.store.tx() as conn:
        all_projects = ctx.store.get_many(conn, t.projects)
    if not _restrict(ctx, req, all_projects):
        return {"projects": []}
    by_id = {p["id"]: p for p in all_projects}
    page = scroll.window(ctx, req)
    window = None if page is None else (page.start, page.size)
    selected = _with_parent_object(listed(ctx, req), by_id)
    projects = _with_people(ctx, query.apply(selected, _paged_view(req.body, window), default_order="name",
                                             window=window))
    if req.flag("search_hidden"):
        _mark_hidden(projects)
    if req.flag("check_own_contents") and projects:
        _add_own_contents(ctx, req, projects)
    if req.flag("include_stats") and projects:
        _add_stats(ctx, req, projects, all_projects)
    if req.flag("include_dataset_stats") and projects:
        _add_dataset_stats(ctx, projects)
    if page is None:
        return {"projects": projects}
    return {"projects": projects, "scroll_id": scroll.advance(ctx, page, len(projects))}


def _paged_view(body: dict, window: tuple[int, int] | None) -> dict:
    """What query.apply sees: `user.name` keeps `user` (joined after); a scroll orders by name,
    ids breaking ties, so no page repeats a project."""
    only = body.get("only_fields")
    view = dict(body)
    if isinstance(only, list):
        view["only_fields"] = list(dict.fromkeys("user" if f.startswith("user.") else f for f in only))
    if window:
        order = body.get("order_by") or ["name"]
        view["order_by"] = [*([order] if isinstance(order, str) else order), "id"]
    return view

