"""The get_all filters of list-valued task fields, as the reference server reads them.

Two forms, both pure functions over a field's values (a scalar field counts as a one-item list):

    status: ["__$not", "completed"]          a list with operators: "__$any"/"__$or" (the
    tags: ["__$all", "a", "b", null]         default) or "__$all"/"__$and" switch how the
                                             following values combine, "__$not" excludes the next
                                             value, "-x" excludes x before any operator, a null
                                             also matches an empty field
    filters: {tags: {any: {include, exclude}, all: {include, exclude}, op: "and"}}
                                             the 2.27 form: `any` includes any / excludes not-all,
                                             `all` includes all / excludes every; a null in
                                             include means "empty", in exclude "not empty"

Anything else is a 400 naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from server import errors, query

LIST_FIELDS = ("id", "user", "tags", "system_tags", "type", "status", "project", "parent",
               "execution.queue", "models.input.model")
RANGE_FIELDS = ("active_duration", "last_iteration")  # and last_metrics.*: [min, max]
_ANY_OPS = ("__$any", "__$or")
_ALL_OPS = ("__$all", "__$and")
_NOT = "__$not"


def _bad(name: str, why: str) -> errors.APIError:
    return errors.validation(f"invalid filter for field '{name}': {why}")


@dataclass
class ListPlan:
    """What a list filter asks: values that must be present (any / all), absent, or an empty field."""

    combine_all: bool = True
    any_of: list[str] = field(default_factory=list)
    all_of: list[str] = field(default_factory=list)
    none_of: list[str] = field(default_factory=list)
    allow_empty: bool = False

    def matches(self, values: set) -> bool:
        checks: list[bool] = []
        if self.any_of:
            checks.append(bool(values.intersection(self.any_of)))
        if self.all_of:
            checks.append(set(self.all_of) <= values)
        if self.none_of:
            checks.append(not values.intersection(self.none_of))
        if not checks:
            return not values if self.allow_empty else True
        hit = all(checks) if self.combine_all else any(checks)
        return hit or self.allow_empty and not values


class _ListParser:
    """Reads an operator list term by term into a ListPlan."""

    def __init__(self, name: str):
        self.name, self.plan = name, ListPlan()
        self.global_set = self.context_all = self.negate = False
        self.legacy = True  # "-x" excludes until the first operator

    def feed(self, item: Any) -> None:
        if not (isinstance(item, str) and item.startswith("__$")):
            self.global_set = True  # a value before any operator: the terms are AND-ed
        if item is None:
            self.plan.allow_empty, self.negate = True, False
        elif not isinstance(item, str):
            raise _bad(self.name, f"values must be strings, got {type(item).__name__}")
        elif item.startswith("__$"):
            self._operator(item)
        else:
            self._value(item)

    def _operator(self, item: str) -> None:
        if self.negate:
            raise _bad(self.name, f"a value is expected after '{_NOT}'")
        if item == _NOT:
            self.negate = True
            return
        if item not in _ANY_OPS + _ALL_OPS:
            raise _bad(self.name, f"unsupported operator '{item}'")
        self.context_all, self.legacy = item in _ALL_OPS, False
        if not self.global_set:
            self.plan.combine_all, self.global_set = self.context_all, True

    def _value(self, item: str) -> None:
        if self.legacy and not self.negate and item.startswith("-"):
            if len(item) == 1:
                raise _bad(self.name, "a value is expected after the exclude prefix '-'")
            self.plan.none_of.append(item[1:])
        elif self.negate:
            self.plan.none_of.append(item)
        else:
            (self.plan.all_of if self.context_all else self.plan.any_of).append(item)
        self.negate = False


def parse_list(name: str, data: Any) -> ListPlan:
    """A ListPlan from the operator-list form of field `name`."""
    parser = _ListParser(name)
    for item in data if isinstance(data, list) else [data]:
        parser.feed(item)
    if parser.negate:
        raise _bad(name, f"a value is expected after '{_NOT}'")
    return parser.plan


def _side(name: str, part: Any, key: str) -> tuple[list, list]:
    if part is None:
        return [], []
    if not isinstance(part, dict) or set(part) - {"include", "exclude"}:
        raise _bad(name, f"'{key}' must be an object {{include, exclude}}")
    include, exclude = part.get("include") or [], part.get("exclude") or []
    for values in (include, exclude):
        if not isinstance(values, list) or not all(v is None or isinstance(v, str) for v in values):
            raise _bad(name, f"'{key}.include' and '{key}.exclude' must be lists of strings")
    return include, exclude


def _part_check(include: list, exclude: list, all_mode: bool) -> Callable[[set], bool] | None:
    """One `any`/`all` part of the 2.27 form as a predicate; None when it asks nothing."""
    checks: list[Callable[[set], bool]] = []
    inc, exc = [v for v in include if v is not None], [v for v in exclude if v is not None]
    if None in include:
        checks.append(lambda vs: not vs)
    if None in exclude:
        checks.append(lambda vs: bool(vs))
    if inc:
        checks.append((lambda vs: set(inc) <= vs) if all_mode else (lambda vs: bool(vs.intersection(inc))))
    if exc:
        checks.append((lambda vs: not vs.intersection(exc)) if all_mode else (lambda vs: not set(exc) <= vs))
    if not checks:
        return None
    combine = all if all_mode else any
    return lambda vs: combine(check(vs) for check in checks)


def parse_field_filter(name: str, spec: Any) -> Callable[[set], bool]:
    """A predicate over a field's values from the 2.27 `filters` form."""
    if not isinstance(spec, dict) or set(spec) - {"any", "all", "op"}:
        raise _bad(name, "expected an object {any, all, op}")
    op = spec.get("op") or "and"
    if op not in ("and", "or"):
        raise _bad(name, f"'op' must be 'and' or 'or', got {op!r}")
    parts = [check for check in (_part_check(*_side(name, spec.get(key), key), key == "all")
                                 for key in ("any", "all")) if check is not None]
    if not parts:
        return lambda vs: True
    combine = all if op == "and" else any
    return lambda vs: combine(part(vs) for part in parts)


def values_at(doc: dict, path: str) -> set:
    """The values of a (dotted) field as a set: a list's items, a scalar as one item, nothing for
    null or missing. `models.input.model` collects the model of every input entry."""
    node: Any = doc
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list):
            rest = ".".join(parts[i:])
            return set().union(*(values_at(item, rest) for item in node if isinstance(item, dict)))
        if not isinstance(node, dict):
            return set()
        node = node.get(part)
    if node is None:
        return set()
    items = node if isinstance(node, list) else [node]
    return {item for item in items if isinstance(item, (str, int, float))}


def is_plain(data: Any) -> bool:
    """True when a list filter is just values (no operator, exclusion or null): SQL can do it."""
    items = data if isinstance(data, list) else [data]
    return all(isinstance(v, str) and v and not v.startswith(("__$", "-")) for v in items)


def predicates(body: dict, skip: tuple[str, ...] = ()) -> list[Callable[[dict], bool]]:
    """Document predicates for the request's list-field and `filters` conditions."""
    preds: list[Callable[[dict], bool]] = []
    for name in LIST_FIELDS:
        data = body.get(name)
        if name in skip or data is None or data == []:
            continue
        preds.append(_plan_check(name, parse_list(name, data)))
    for name, data in body.items():
        if name.startswith("hyperparams.") and data not in (None, []):
            preds.append(_plan_check(name, parse_list(name, data)))
        elif is_range_field(name) and data is not None:
            preds.append(_range_check(name, data))
    extra = body.get("filters")
    if extra is not None and not isinstance(extra, dict):
        raise errors.validation("field 'filters' must be an object {field: {any, all, op}}")
    for name, spec in (extra or {}).items():
        preds.append(_field_check(name, parse_field_filter(name, spec)))
    return preds


def is_range_field(name: str) -> bool:
    return name.startswith("last_metrics.") or name in RANGE_FIELDS


def _range_check(name: str, data: Any) -> Callable[[dict], bool]:
    """[min, max], both inclusive; a null bound is open, and a null min also takes missing values."""
    if not isinstance(data, list) or len(data) != 2 or not all(
            v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        raise _bad(name, "expected [min, max] numbers (either may be null)")
    low, high = data
    if low is None and high is None:
        raise _bad(name, "at least one of min and max is needed")

    def check(doc: dict) -> bool:
        value = query.dotted_get(doc, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return low is None and value is None
        return (low is None or value >= low) and (high is None or value <= high)

    return check


def _plan_check(name: str, plan: ListPlan) -> Callable[[dict], bool]:
    return lambda doc: plan.matches(values_at(doc, name))


def _field_check(name: str, check: Callable[[set], bool]) -> Callable[[dict], bool]:
    return lambda doc: check(values_at(doc, name))
