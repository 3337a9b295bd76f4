"""Slim rows: a task query reads only the fields it filters and sorts on, not whole documents.

The experiment table sorts thousands of tasks by one metric to show 50 of them. Decoding every
task's whole document (metrics, hyperparameters, script) for that is most of the cost, so the
query first reads, per task, the indexed columns plus the JSON fragments its filters and order
need (`last_metrics.<m>.<v>.value`, `system_tags`, ...), runs the usual filters and order on
those slim documents, and loads whole documents only for the page it answers.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, NamedTuple

from sqlalchemy import select

from server.services.tasks import filters
from server.storage import tables as t

_c = t.tasks.c
COLUMNS = {"id": _c.id, "name": _c.name, "status": _c.status, "type": _c.type, "project": _c.project,
           "parent": _c.parent}
_LIST_PARENTS = {"models.input.model": "models.input", "models.output.model": "models.output"}
_ALWAYS = ("system_tags",)  # the hidden rule reads it
_BATCH = 256


def _clean(path: Any) -> str | None:
    """A dotted path usable as a JSON path in SQL (no quoting or control characters, no lone
    surrogates: SQLite refuses them in a path with an error), or None (Python reads it instead)."""
    if not isinstance(path, str) or not path or any(ch in path for ch in "\"\\'$[]*"):
        return None
    if any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in path):
        return None
    return path


def _order_paths(body: dict) -> list[str]:
    order = body.get("order_by") or []
    order = [order] if isinstance(order, str) else order
    return [o.lstrip("-+") for o in order if isinstance(o, str) and o]


def _pattern_paths(body: dict) -> list[str]:
    out: list[str] = []
    for key in ("_any_", "_all_"):
        spec = body.get(key)
        fields = spec.get("fields") if isinstance(spec, dict) else None
        out += [fields] if isinstance(fields, str) else [f for f in fields or [] if isinstance(f, str)]
    return out


def needed_paths(body: dict, time_fields: Iterable[str]) -> list[str] | None:
    """The JSON paths a query reads, or None when one cannot be read as a fragment (the query
    then loads whole documents)."""
    paths: list[str] = list(_ALWAYS)
    paths += [name for name in filters.LIST_FIELDS if body.get(name) not in (None, [])]
    paths += [str(name).split(".")[0] for name in body.get("filters") or {}]
    paths += [name for name in body if name.startswith("hyperparams.") or filters.is_range_field(name)]
    paths += [name for name in time_fields if body.get(name) is not None]
    paths += _order_paths(body) + _pattern_paths(body)
    out: list[str] = []
    for path in paths:
        clean = _clean(_LIST_PARENTS.get(path, path))
        if clean is None:
            return None
        if clean not in COLUMNS and clean not in out:
            out.append(clean)
    return out


def _nest(doc: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if value is not None:
        node[leaf] = value


def rows(conn: Any, where: list[Any], paths: list[str]) -> list[dict]:
    """Slim task documents: the id/name/status/type/project/parent columns and `paths`."""
    query = _where(select(*COLUMNS.values(), *_extracts(paths)), where)
    return [_slim(row, paths) for row in conn.execute(query)]


def _slim(row: Any, paths: list[str]) -> dict:
    doc = dict(zip(COLUMNS, row[:len(COLUMNS)], strict=True))
    for path, value in zip(paths, row[len(COLUMNS):], strict=True):
        _nest(doc, path, value)
    return doc


_DATES = ("created", "last_update", "last_change", "started", "status_changed")  # ISO text: orders as time
_NUMBERS = ("last_iteration", "active_duration")
_METRIC_NUMBERS = ("value", "min_value", "max_value", "mean_value", "first_value", "count", "min_value_iteration",
                   "max_value_iteration", "first_value_iteration")  # last_metrics.<m>.<v>.<these> are numbers
_METRIC_INDEXED = ("value", "min_value", "max_value")  # ... and these are in task_metrics


def _order_expr(path: str, pg: bool) -> Any:
    """What SQL orders `path` by, or None when only Python can (hyperparameters stored as text,
    fields of several types). Text orders by code point, as Python does (PostgreSQL: COLLATE "C")."""
    field = t.tasks.c.doc[tuple(path.split("."))]
    if path in COLUMNS:
        expr: Any = COLUMNS[path]
    elif path in _NUMBERS or path.startswith("last_metrics.") and path.rsplit(".", 1)[-1] in _METRIC_NUMBERS:
        return field.as_float()
    elif path in _DATES:
        expr = field.as_string()
    else:
        return None
    return expr.collate("C") if pg else expr


def sql_order(conn: Any, body: dict) -> Order | None:
    """ORDER BY clauses for a query the database can order itself (one order key of a known
    type), and that key's path; None when Python must order. The key's nulls go last whichever
    the direction and ids break ties, as in query.sort_docs."""
    order = _order_paths(body)
    if conn.dialect.name not in ("sqlite", "postgresql") or len(order) != 1 or _clean(order[0]) is None:
        return None
    spec = body["order_by"] if isinstance(body["order_by"], str) else next(
        o for o in body["order_by"] if isinstance(o, str) and o)
    pg = conn.dialect.name == "postgresql"
    expr = _order_expr(order[0], pg)
    if expr is None:
        return None
    tiebreak = _c.id.collate("C") if pg else _c.id
    desc = spec.startswith("-")
    return Order([(expr.desc() if desc else expr.asc()).nulls_last(), tiebreak.asc()], order[0], desc, tiebreak)


class Order(NamedTuple):
    clauses: list[Any]  # ORDER BY: the key (nulls last), then the id
    path: str
    desc: bool
    tiebreak: Any


def _metric_key(path: str) -> tuple[str, str] | None:
    """("<metric>.<variant>", field) when `path` sorts by a value task_metrics holds."""
    parts = path.split(".")
    if len(parts) == 4 and parts[0] == "last_metrics" and parts[3] in _METRIC_INDEXED:
        return f"{parts[1]}.{parts[2]}", parts[3]
    return None


def _id_queries(where: list[Any], order: Order) -> list[Any]:
    """The queries whose results, one after the other, are the ordered ids. A metric key reads
    the task_metrics index: the tasks with a value in order, then those without one by id."""
    key = _metric_key(order.path)
    if key is None:
        return [_where(select(_c.id).order_by(*order.clauses), where)]
    m = t.task_metrics.c
    value = m[key[1]]
    has = select(m.task).where(m.task == _c.id, m.metric == key[0], value.is_not(None)).exists()
    valued = (select(_c.id).select_from(t.task_metrics.join(t.tasks, m.task == _c.id))
              .where(m.metric == key[0], value.is_not(None))
              .order_by(value.desc() if order.desc else value.asc(), order.tiebreak.asc()))
    return [_where(valued, where), _where(select(_c.id).where(~has).order_by(order.tiebreak.asc()), where)]


def _ordered_ids(conn: Any, where: list[Any], order: Order, size: int) -> Iterator[list[str]]:
    """The ordered ids in chunks of growing size (LIMIT queries: the database evaluates only the
    order key of each task)."""
    for query in _id_queries(where, order):
        offset = 0
        while True:
            ids = [row[0] for row in conn.execute(query.limit(size).offset(offset))]
            yield ids
            if len(ids) < size:
                break
            offset, size = offset + size, size * 2


def ordered_rows(conn: Any, where: list[Any], paths: list[str], order: Order,
                 wanted: int | None) -> Iterator[list[dict]]:
    """`rows`, ordered by SQL, a chunk at a time: the caller stops once its page is full. A
    chunk is a LIMIT query for ids alone, then the slim rows of those ids."""
    if wanted is None:
        query = select(*COLUMNS.values(), *_extracts(paths)).order_by(*order.clauses)
        yield [_slim(row, paths) for row in conn.execute(_where(query, where))]
        return
    # An index-ordered key costs little per id; the slim rows (JSON read per task) are the cost.
    first = 2 * wanted if _metric_key(order.path) else max(_BATCH, 2 * wanted)
    for ids in _ordered_ids(conn, where, order, first):
        found = {doc["id"]: doc for doc in rows(conn, [_c.id.in_(ids)], paths)} if ids else {}
        yield [found[i] for i in ids if i in found]


def _extracts(paths: list[str]) -> list[Any]:
    return [t.tasks.c.doc[tuple(path.split("."))] for path in paths]


def _where(query: Any, where: list[Any]) -> Any:
    for clause in where:
        query = query.where(clause)
    return query
