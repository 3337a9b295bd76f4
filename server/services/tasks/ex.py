"""tasks.get_all, tasks.get_all_ex and tasks.get_by_id_ex: the task table's query.

    select      filters (SQL for plain id/project/status/type/parent lists and indexed dates, the
                list-field operators of filters.py and document dates in Python), then
                query.apply's name/pattern/hidden rules, order and page
    scroll      `scroll_id`/`size`/`refresh_scroll` paging (server/services/scroll.py: one id
                for the whole scroll, as the web UI requires); a page never repeats a task
                (ids break ties)
    joins       the _ex answers: references as objects (`project: {id, name}` when `project.name`
                is asked, else `{id}`), `user`/`company` always `{id, name}` (people.py)
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select as sql_select

from server import errors, query
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services import scroll
from server.services.tasks import doc as taskdoc
from server.services.tasks import filters, people, slim
from server.storage import tables as t

_c = t.tasks.c
_SQL_LISTS = {"id": _c.id, "project": _c.project, "status": _c.status, "type": _c.type, "parent": _c.parent}
_SQL_TIMES = {"last_change": _c.last_change, "last_update": _c.last_update, "created": _c.created}
_DOC_TIMES = ("status_changed", "started")
_ID_CHUNK = 500  # ids per IN (...) (SQLite bounds the parameters of one statement)
_HANDLED = ("tags", "system_tags")  # done here (filters.py), not by query.apply
REFS = {"project": t.projects, "parent": t.tasks, "execution.queue": t.queues,
        "models.input.model": t.models, "models.output.model": t.models}
PEOPLE = ("user", "company")


# -- select -------------------------------------------------------------------------------------

def _sql_where(body: dict) -> tuple[list[Any], tuple[str, ...]]:
    where: list[Any] = []
    done: list[str] = []
    for key, column in _SQL_LISTS.items():
        values = body.get(key)
        if values and filters.is_plain(values):
            where.append(column.in_(values if isinstance(values, list) else [values]))
            done.append(key)
    return where + query.time_clauses(body, _SQL_TIMES), tuple(done)


def _order(body: dict, window: tuple[int, int] | None) -> dict:
    """The body query.apply sees: tags and paging are done here; a scroll without an order still
    needs one, so it runs oldest first."""
    rest = {k: v for k, v in body.items() if k not in _HANDLED}
    if window:
        rest.pop("page", None)
        rest.pop("page_size", None)
    if body.get("id"):
        rest["search_hidden"] = True
    if window and not rest.get("order_by"):
        rest["order_by"] = ["created"]
    rest.pop("only_fields", None)
    return rest


def select(ctx: CallContext, req: Request) -> tuple[list[dict], str | None]:
    """The tasks a get_all request asks for, in order, paged, not yet projected; and the next
    scroll id when it scrolls."""
    body = req.body
    schema.check(schema.REQUESTS[ctx.endpoint], body)
    if req.flag("include_subprojects") and body.get("project") and filters.is_plain(body["project"]):
        body = {**body, "project": _with_subprojects(ctx, req.str_list("project") or [])}
    page = scroll.window(ctx, req)
    window = None if page is None else (page.start, page.size)
    where, done = _sql_where(body)
    checks = filters.predicates(body, skip=done)
    paths = slim.needed_paths(body, _DOC_TIMES)
    view = _order(body, window)
    with ctx.store.tx() as conn:
        ordered = slim.sql_order(conn, view) if paths is not None else None
        if ordered and paths is not None:
            docs = _sql_ordered(conn, where, paths, ordered, body, checks, window)
        else:
            docs = ctx.store.get_many(conn, t.tasks, where) if paths is None else slim.rows(conn, where, paths)
            docs = query.apply(_kept(docs, body, checks), view, window=window)
        if paths is not None:
            docs = _whole(ctx, conn, [d["id"] for d in docs])
    docs = [taskdoc.public_view(ctx, d) for d in docs]
    return docs, None if page is None else scroll.advance(ctx, page, len(docs))


def _with_subprojects(ctx: CallContext, projects: list[str]) -> list[str]:
    """The projects and every project under them ("a" holds "a/b" and "a/b/c")."""
    with ctx.store.tx() as conn:
        rows = [(str(r[0]), str(r[1])) for r in conn.execute(sql_select(t.projects.c.id, t.projects.c.name))]
    names = {pid: name for pid, name in rows if pid in projects}
    under = [pid for pid, name in rows if any(name.startswith(parent + "/") for parent in names.values())]
    return list(dict.fromkeys([*projects, *under]))


def _kept(docs: list[dict], body: dict, checks: list) -> list[dict]:
    for field in _DOC_TIMES:
        docs = query.filter_time(docs, body, field)
    return [d for d in docs if all(check(d) for check in checks)]


def _wanted(body: dict, window: tuple[int, int] | None) -> int | None:
    """How many matching tasks, in order, a page needs (None: all)."""
    if window:
        return window[0] + window[1]
    page, size = body.get("page"), body.get("page_size")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return ((page if isinstance(page, int) and page > 0 else 0) + 1) * size
    return None


def _sql_ordered(conn, where: list, paths: list[str], order: slim.Order, body: dict, checks: list,
                 window: tuple[int, int] | None) -> list[dict]:
    """The database orders; the filters run on chunks of slim rows until the page is full."""
    rules = {k: v for k, v in _order(body, window).items() if k not in ("order_by", "page", "page_size")}
    wanted = _wanted(body, window)
    kept: list[dict] = []
    for batch in slim.ordered_rows(conn, where, paths, order, wanted):
        kept += query.apply(_kept(batch, body, checks), rules)
        if wanted is not None and len(kept) >= wanted:
            break
    paging = {"page": body.get("page"), "page_size": body.get("page_size"), "search_hidden": True}
    return query.apply(kept, paging, window=window)


def _whole(ctx: CallContext, conn, ids: list[str]) -> list[dict]:
    """The whole documents of `ids`, in that order."""
    found: dict[str, dict] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start:start + _ID_CHUNK]
        found.update((d["id"], d) for d in ctx.store.get_many(conn, t.tasks, [_c.id.in_(chunk)]))
    return [found[i] for i in ids if i in found]


# -- projection and joins -----------------------------------------------------------------------

def _split_fields(only: Any, refs: dict) -> tuple[list[str] | None, dict[str, set[str]]]:
    """The document paths to keep, and for each reference (or person) the fields asked of it."""
    paths = [only] if isinstance(only, str) else list(only or [])
    if not paths or "*" in paths:
        return None, {}
    keep: list[str] = []
    joins: dict[str, set[str]] = {}
    for path in paths:
        ref = next((r for r in (*refs, *PEOPLE) if path.startswith(r + ".")), None)
        if ref is None:
            keep.append(path)
            continue
        joins.setdefault(ref, set()).add(path[len(ref) + 1:])
        keep.append("models" if ref.startswith("models.") else ref)
    return keep, joins


def _ref_ids(doc: dict, ref: str) -> list[str]:
    if ref.startswith("models."):
        kind = ref.split(".")[1]
        entries = (doc.get("models") or {}).get(kind) if isinstance(doc.get("models"), dict) else None
        return [e["model"] for e in entries or [] if isinstance(e, dict) and isinstance(e.get("model"), str)]
    value = query.dotted_get(doc, ref)
    return [value] if isinstance(value, str) and value else []


def _replace(doc: dict, ref: str, objects: dict[str, dict]) -> None:
    if ref.startswith("models."):
        kind = ref.split(".")[1]
        models = doc.get("models")
        if isinstance(models, dict) and isinstance(models.get(kind), list):
            models[kind] = [{**e, "model": objects.get(e["model"], {"id": e["model"]})}
                            if isinstance(e, dict) and isinstance(e.get("model"), str) else e
                            for e in models[kind]]
        return
    *parents, leaf = ref.split(".")
    node = query.dotted_get(doc, ".".join(parents)) if parents else doc
    if isinstance(node, dict) and isinstance(node.get(leaf), str):
        node[leaf] = objects.get(node[leaf], {"id": node[leaf]})


def _joined(ctx: CallContext, conn, table: Any, ids: set[str], fields: set[str]) -> dict[str, dict]:
    if not fields or not ids:
        return {}
    rows = ctx.store.get_many(conn, table, [table.c.id.in_(sorted(ids))])
    wanted = None if "*" in fields else sorted(fields)
    return {row["id"]: query.project_fields(row, wanted) for row in rows}


def _copy_path(doc: dict, ref: str) -> None:
    """Give `doc` its own copy of the objects on `ref`'s way, so replacing a reference never
    touches a document shared with another answer."""
    if ref.startswith("models.") and isinstance(doc.get("models"), dict):
        doc["models"] = dict(doc["models"])
    elif "." in ref and isinstance(doc.get(ref.split(".")[0]), dict):
        doc[ref.split(".")[0]] = dict(doc[ref.split(".")[0]])


def join(ctx: CallContext, docs: list[dict], only: Any, refs: dict | None = None) -> list[dict]:
    """Project `docs` for an _ex answer: references as objects, people as {id, name}. `refs`:
    the document's reference paths and the tables they point into (a task's by default; the
    models' answers pass their own)."""
    refs = REFS if refs is None else refs
    keep, joins = _split_fields(only, refs)
    docs = [query.project_fields(d, keep) for d in docs]
    with ctx.store.tx() as conn:
        for ref, table in refs.items():
            ids = {i for d in docs for i in _ref_ids(d, ref)}
            objects = _joined(ctx, conn, table, ids, joins.get(ref, set()))
            for doc in docs:
                _copy_path(doc, ref)
                _replace(doc, ref, objects)
        users = people.refs(conn, {d["user"] for d in docs if isinstance(d.get("user"), str)})
    for doc in docs:
        if isinstance(doc.get("user"), str):
            doc["user"] = users.get(doc["user"], {"id": doc["user"], "name": doc["user"]})
        if isinstance(doc.get("company"), str):
            doc["company"] = people.company_ref(doc["company"])
    return docs


# -- endpoints ----------------------------------------------------------------------------------

def _answer(tasks: list[dict], scroll_id: str | None) -> dict:
    return {"tasks": tasks, "scroll_id": scroll_id} if scroll_id else {"tasks": tasks}


@endpoint("tasks.get_all")
def get_all(ctx: CallContext, req: Request) -> dict:
    docs, scroll_id = select(ctx, req)
    only = req.body.get("only_fields")
    return _answer([query.project_fields(d, [only] if isinstance(only, str) else only) for d in docs], scroll_id)


@endpoint("tasks.get_all_ex")
def get_all_ex(ctx: CallContext, req: Request) -> dict:
    docs, scroll_id = select(ctx, req)
    return _answer(join(ctx, docs, req.body.get("only_fields")), scroll_id)


@endpoint("tasks.get_by_id_ex")
def get_by_id_ex(ctx: CallContext, req: Request) -> dict:
    if not req.array("id"):
        raise errors.missing_field("id")
    docs, _ = select(ctx, req)
    return {"tasks": join(ctx, docs, req.body.get("only_fields"))}
