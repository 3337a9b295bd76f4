"""Slim rows: a task query reads only the fields it filters and sorts on, not whole documents.

The experiment table sorts thousands of tasks by one metric to show 50 of them. Decoding every
task's whole document (metrics, hyperparameters, script) for that is most of the cost, so the
query first reads, per task, the indexed columns plus the JSON fragments its filters and order
need (`last_metrics.<m>.<v>.value`, `system_tags`, ...), runs the usual filters and order on
those slim documents, and loads whole documents only for the page it answers.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

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


def sql_order(conn: Any, body: dict) -> tuple[list[Any], str] | None:
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
    return [(expr.desc() if spec.startswith("-") else expr.asc()).nulls_last(), tiebreak.asc()], order[0]


def ordered_rows(conn: Any, where: list[Any], paths: list[str], order_by: list[Any],
                 wanted: int | None) -> Iterator[list[dict]]:
    """`rows`, ordered by SQL, a chunk at a time: the caller stops once its page is full. A
    chunk is a LIMIT query for ids alone (the database evaluates only the order key of each
    task), then the slim rows of those ids."""
    if wanted is None:
        query = select(*COLUMNS.values(), *_extracts(paths)).order_by(*order_by)
        yield [_slim(row, paths) for row in conn.execute(_where(query, where))]
        return
    ids_query = _where(select(_c.id).order_by(*order_by), where)
    offset, size = 0, max(_BATCH, 2 * wanted)
    while True:
        ids = [row[0] for row in conn.execute(ids_query.limit(size).offset(offset))]
        found = {doc["id"]: doc for doc in rows(conn, [_c.id.in_(ids)], paths)} if ids else {}
        yield [found[i] for i in ids if i in found]
        if len(ids) < size:
            return
        offset, size = offset + size, size * 2


def _extracts(paths: list[str]) -> list[Any]:
    return [t.tasks.c.doc[tuple(path.split("."))] for path in paths]


def _where(query: Any, where: list[Any]) -> Any:
    for clause in where:
        query = query.where(clause)
    return query
