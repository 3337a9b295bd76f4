"""The `get_all` query language shared by tasks, projects, queues and models.

Filtering that SQL handles portably (ids, project, status, type) is done by the caller's
`where` clauses; everything ClearML expresses with regexes, tag algebra, dotted field
projection, ordering and paging is done here on the documents.

Patterns come from any caller, so they run on RE2 (`google-re2`), whose matching time is
linear in the text: `(a|a)*b` cannot backtrack. RE2 has no backreferences or lookaround;
such a pattern is a 400 naming its field. The document loops check the request's time
budget (`time_budget`, set by the dispatcher) so no filter holds a worker thread for long.
"""
from __future__ import annotations

import contextlib
import contextvars
import operator
import time
from typing import Any, Callable, Iterable, Iterator

import re2

from server import errors
from server.rpc import schema
from shipyard import clock
from shipyard.protocol import SystemTag

MAX_PATTERN_CHARS = 1024
MAX_PAGE_SIZE = 10_000
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("query_deadline", default=None)


def dotted_get(doc: dict, path: str, default: Any = None) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _project_path(out: dict, doc: dict, path: str) -> None:
    """Copy `path` from `doc` into `out` as a MongoDB projection does: the embedded objects on the
    way are kept even when the leaf is missing (`runtime.version` of a task whose runtime has no
    version gives `runtime: {}`, which the SDK's Dataset code relies on)."""
    *parents, leaf = path.split(".")
    node: Any = doc
    target = out
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            return
    if leaf in node:
        target[leaf] = node[leaf]


def project_fields(doc: dict, only_fields: list[str] | None) -> dict:
    """`doc` cut to `only_fields`; `"*"` among them keeps every field (the reference server's
    projection, which the web UI sends with the joined fields it wants besides)."""
    if not only_fields or "*" in only_fields:
        return doc
    out: dict = {"id": doc.get("id")}
    for path in only_fields:
        if isinstance(path, str) and path:
            _project_path(out, doc, path)
    return out


@contextlib.contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """Give the `get_all` filters of the current request `seconds` to finish (None: no limit)."""
    token = _DEADLINE.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _within_budget(docs: list[dict], keep: Callable[[dict], bool], what: str) -> list[dict]:
    """`[d for d in docs if keep(d)]`, refused with a 400 once the request's budget is spent."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return [d for d in docs if keep(d)]
    kept = []
    for doc in docs:
        if time.monotonic() > deadline:
            raise errors.validation(f"the '{what}' filter ran out of the server's time budget; "
                                    "use a simpler pattern or narrow the query (project, status, page)")
        if keep(doc):
            kept.append(doc)
    return kept


class Pattern:
    """A case-insensitive RE2 pattern; `matches(value)` searches `str(value)` anywhere."""

    __slots__ = ("_rx",)

    def __init__(self, rx: Any):
        self._rx = rx

    def matches(self, value: Any) -> bool:
        text = value if isinstance(value, str) else str(value)
        return self._rx.search(text.encode("utf-8", "surrogatepass")) is not None


def compile_regex(pattern: Any, field: str = "name") -> Pattern:
    """Compile a caller's pattern on RE2 (linear time), or a 400 naming `field`."""
    if not isinstance(pattern, str):
        raise errors.validation(f"'{field}' must be a regular expression string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise errors.validation(f"regular expression for '{field}' is longer than {MAX_PATTERN_CHARS} characters")
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    options.never_capture = True
    try:
        return Pattern(re2.compile(pattern.encode("utf-8", "surrogatepass"), options))
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise errors.validation(f"invalid regular expression for '{field}': {reason} (patterns run on RE2: "
                                "no backreferences or lookaround)") from None


def tags_match(doc_tags: Iterable[str], wanted: list[str] | None) -> bool:
    """ClearML tag filter: plain entries OR together, `-x` / `__$not x` exclude, `__$all` ANDs."""
    if not wanted:
        return True
    have = {tag for tag in doc_tags or () if type(tag) is str}  # documents stored before tags were checked
    include: list[str] = []
    exclude: list[str] = []
    mode_all = False
    negate_next = False
    for item in wanted:
        if item == "__$all":
            mode_all = True
        elif item in ("__$any", "__$and", "__$or"):
            continue
        elif item == "__$not":
            negate_next = True
        elif negate_next:
            exclude.append(item)
            negate_next = False
        elif item.startswith("-") and len(item) > 1:
            exclude.append(item[1:])
        else:
            include.append(item)
    if have.intersection(exclude):
        return False
    if not include:
        return True
    return set(include) <= have if mode_all else bool(have.intersection(include))


def _any_all_filter(docs: list[dict], spec: Any, combine: Any, key: str) -> list[dict]:
    """`_any_` / `_all_`: `pattern` searched in each of `fields`, OR-ed / AND-ed together."""
    if not isinstance(spec, dict):
        raise errors.validation(f"'{key}' must be an object {{pattern, fields}}")
    pattern, fields = spec.get("pattern"), spec.get("fields") or []
    fields = [fields] if isinstance(fields, str) else fields
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise errors.validation(f"'{key}.fields' must be a list of field names")
    if not pattern or not fields:
        return docs
    rx = compile_regex(pattern if isinstance(pattern, str) else str(pattern), f"{key}.pattern")
    return _within_budget(docs, lambda d: combine(rx.matches(dotted_get(d, f, "") or "") for f in fields),
                          f"{key}.pattern")


def _numeric_text(value: Any) -> Any:
    """A hyperparameter's value (always stored as text) as a number when it reads as one, so
    `order_by: hyperparams.Args.lr.value` puts 1e-4 before 0.01; other text stays text."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if number == number else value  # NaN stays text: it has no order
    return value


def _rank(value: Any) -> tuple:
    """A sort key under which missing values come first, then numbers, then text, then the rest."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, str(value))


def _sort_keys(order_by: list[str]) -> list[tuple[str, bool, bool]]:
    keys = []
    for spec in order_by:
        if not isinstance(spec, str) or not spec:
            continue
        path = spec.lstrip("-+")
        keys.append((path, spec.startswith("-"), path.startswith(("hyperparams.", "last_metrics."))))
    if not any(path == "id" for path, _, _ in keys):
        keys.append(("id", False, False))
    return keys


def _sort_value(doc: dict, path: str, numeric: bool) -> Any:
    value = dotted_get(doc, path)
    return _numeric_text(value) if numeric else value


def _value_key(path: str, numeric: bool) -> Callable[[dict], tuple]:
    return lambda doc: _rank(_sort_value(doc, path, numeric))


def sort_docs(docs: list[dict], order_by: list[str]) -> list[dict]:
    """Order by the given fields, then by id (so pages never overlap). As on the reference
    server, the first field's missing values come last whichever the direction, and
    hyperparameter values (stored as text) order as numbers when they read as numbers.
    Stable sorts from the last key to the first: each takes one pass of a plain key."""
    keys = _sort_keys(order_by)
    out = list(docs)
    for path, desc, numeric in reversed(keys[1:]):
        out.sort(key=_value_key(path, numeric), reverse=desc)
    path, desc, numeric = keys[0]
    valued = [(_sort_value(d, path, numeric), d) for d in out]
    present = [pair for pair in valued if pair[0] is not None]
    present.sort(key=lambda pair: _rank(pair[0]), reverse=desc)
    return [d for _, d in present] + [d for value, d in valued if value is None]


def apply(docs: list[dict], body: dict, *, name_field: str = "name", default_order: str | None = None,
          hidden_tag: str = SystemTag.HIDDEN, window: tuple[int, int] | None = None) -> list[dict]:
    """Filter, sort, page and project `docs` according to a get_all request body; `window`
    (start, size) replaces the body's page fields (scroll paging)."""
    schema.check(schema.GET_ALL, {k: body.get(k) for k in schema.GET_ALL.fields})
    name = body.get("name")
    if isinstance(name, str) and name:
        rx = compile_regex(name)
        docs = _within_budget(docs, lambda d: rx.matches(d.get(name_field) or ""), "name")
    for field in ("tags", "system_tags"):
        wanted = body.get(field)
        if isinstance(wanted, str):
            wanted = [wanted]
        if wanted:
            docs = [d for d in docs if tags_match(d.get(field) or [], wanted)]
    if not body.get("search_hidden") and not body.get("id"):
        docs = [d for d in docs if hidden_tag not in (d.get("system_tags") or [])]
    if body.get("_any_"):
        docs = _any_all_filter(docs, body["_any_"], any, "_any_")
    if body.get("_all_"):
        docs = _any_all_filter(docs, body["_all_"], all, "_all_")
    order_by = body.get("order_by") or ([default_order] if default_order else [])
    if isinstance(order_by, str):
        order_by = [order_by]
    if order_by:
        docs = sort_docs(docs, order_by)
    docs = docs[window[0]:window[0] + window[1]] if window else _page(docs, body)
    only_fields = body.get("only_fields")
    return [project_fields(d, [only_fields] if isinstance(only_fields, str) else only_fields) for d in docs]


_TIME_OPS = ((">=", operator.ge), ("<=", operator.le), (">", operator.gt), ("<", operator.lt))


def time_bounds(body: dict, field: str) -> list[tuple[Any, float]]:
    """ClearML's date filter on a get_all field, as (comparison, epoch seconds) pairs.

    Accepted forms: ">2024-01-01T00:00:00" (also >=, <, <=), a list of such strings (AND),
    or a [from, to] pair of plain dates (inclusive, either may be null).
    """
    value = body.get(field)
    if value is None or value == []:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(v is None or isinstance(v, str) for v in items):
        raise errors.validation(f"'{field}' must be a date filter such as '>2024-01-01T00:00:00'")
    if len(items) == 2 and not any(v and v[0] in "<>" for v in items):
        pairs = [(">=", items[0]), ("<=", items[1])]
    else:
        pairs = [next(((op, v[len(op):]) for op, _ in _TIME_OPS if v and v.startswith(op)), ("", v))
                 for v in items]
    bounds = []
    for op, text in pairs:
        if text is None:
            continue
        if not op:
            raise errors.validation(f"'{field}' filter '{text}' needs a comparison (>, >=, <, <=)")
        try:
            bounds.append((dict(_TIME_OPS)[op], clock.parse_iso(text.strip())))
        except ValueError:
            raise errors.validation(f"'{field}' filter: '{text}' is not an ISO-8601 date") from None
    return bounds


def time_clauses(body: dict, columns: dict[str, Any]) -> list[Any]:
    """SQL clauses for date filters on indexed columns that hold epoch seconds."""
    return [compare(column, ts) for field, column in columns.items() for compare, ts in time_bounds(body, field)]


def filter_time(docs: list[dict], body: dict, field: str) -> list[dict]:
    """Date filters on a document field that holds an ISO-8601 string."""
    bounds = time_bounds(body, field)
    if not bounds:
        return docs

    def keep(doc: dict) -> bool:
        try:
            ts = clock.parse_iso(str(doc.get(field) or ""))
        except ValueError:
            return False
        return all(compare(ts, bound) for compare, bound in bounds)

    return [d for d in docs if keep(d)]


def _page(docs: list[dict], body: dict) -> list[dict]:
    page, size = body.get("page"), body.get("page_size")
    if size is None or page is None:
        if isinstance(size, int) and size > 0:
            return docs[:size]
        return docs
    if not isinstance(page, int) or not isinstance(size, int) or page < 0 or size < 1:
        raise errors.validation("page must be >= 0 and page_size >= 1")
    if size > MAX_PAGE_SIZE:
        raise errors.validation(f"page_size must be at most {MAX_PAGE_SIZE}")
    return docs[page * size:(page + 1) * size]
