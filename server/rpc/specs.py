"""The spec machinery of the API's field tables (server/rpc/schema.py): each spec checks a value
(`problem`, a message naming the first bad field, or None) and describes itself for /openapi.json
(`json_schema`).

    Spec                                the base class
    STR, INT, NUM, BOOL, NULL, FLAG     scalars (`Scalar`); FLAG is a request flag, which may also
                                        come as "true"/"1"/0
    ANY                                 any JSON value nested at most MAX_DEPTH levels
    Enum, Obj, ListOf, MapOf, AnyOf     one of some strings; an object's fields; a list's items;
                                        an object's values; one of several specs
    check(spec, value)                  raise errors.validation naming the first bad field
    too_deep(value)                     nesting beyond MAX_DEPTH (what JSON columns can store)

Conventions: an object's unknown fields pass through untouched (clients send fields we do
not know); a declared field that is null counts as absent; list items and map values must
match their spec (null included), because readers iterate them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable

from server import errors

MAX_DEPTH = 100  # below orjson's 255-level limit and Python's recursion limit, far above real documents
_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object",
              list: "array", type(None): "null"}


def _kind(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _show(path: str) -> str:
    return path if len(path) <= 120 else path[:117] + "..."


class Spec:
    """A value's expected type: `problem` says what is wrong (or None), `json_schema` describes it."""

    label = "a value"

    def problem(self, value: Any, path: str) -> str | None:
        raise NotImplementedError

    def json_schema(self) -> dict:
        raise NotImplementedError

    def _wrong(self, value: Any, path: str) -> str:
        return f"field '{_show(path)}' must be {self.label}, got {_kind(value)}"


class Scalar(Spec):
    def __init__(self, label: str, kinds: tuple[type, ...], schema: dict):
        self.label, self.kinds, self.schema = label, kinds, schema

    def problem(self, value: Any, path: str) -> str | None:
        if type(value) is bool and bool not in self.kinds or not isinstance(value, self.kinds):
            return self._wrong(value, path)
        return None

    def json_schema(self) -> dict:
        return dict(self.schema)


STR = Scalar("a string", (str,), {"type": "string"})
INT = Scalar("an integer", (int,), {"type": "integer", "format": "int64"})
NUM = Scalar("a number", (int, float), {"type": "number"})
BOOL = Scalar("a boolean", (bool,), {"type": "boolean"})
NULL = Scalar("null", (type(None),), {"type": "null"})
# Request flags: documented as booleans, but Request.bool also takes "true"/"1"/0 (query strings).
FLAG = Scalar("a boolean", (bool, int, str), {"type": "boolean"})


class Enum(Spec):
    def __init__(self, *values: str):
        self.values = values
        self.label = "one of " + ", ".join(values)

    def problem(self, value: Any, path: str) -> str | None:
        return None if isinstance(value, str) and value in self.values else self._wrong(value, path)

    def json_schema(self) -> dict:
        return {"type": "string", "enum": list(self.values)}


class _Any(Spec):
    """Any JSON value, nested at most MAX_DEPTH levels."""

    label = "a JSON value"

    def problem(self, value: Any, path: str) -> str | None:
        if too_deep(value):
            return f"field '{_show(path)}' is nested deeper than {MAX_DEPTH} levels"
        return None

    def json_schema(self) -> dict:
        return {}


ANY = _Any()


class AnyOf(Spec):
    def __init__(self, *options: Spec):
        self.options = options
        self.label = " or ".join(o.label for o in options)

    def problem(self, value: Any, path: str) -> str | None:
        problems = [o.problem(value, path) for o in self.options]
        if all(problems):
            # a value of a matching kind reports its own inner problem; otherwise the whole choice
            inner = [p for p, o in zip(problems, self.options, strict=True) if _same_kind(o, value)]
            return inner[0] if inner else self._wrong(value, path)
        return None

    def json_schema(self) -> dict:
        return {"anyOf": [o.json_schema() for o in self.options]}


def _same_kind(spec: Spec, value: Any) -> bool:
    return (isinstance(spec, (Obj, MapOf)) and type(value) is dict) or (isinstance(spec, ListOf) and type(value) is list)


class ListOf(Spec):
    def __init__(self, item: Spec):
        self.item = item
        self.label = "a list"

    def problem(self, value: Any, path: str) -> str | None:
        if type(value) is not list:
            return self._wrong(value, path)
        for index, item in enumerate(value):
            found = self.item.problem(item, f"{path}[{index}]")
            if found:
                return found
        return None

    def json_schema(self) -> dict:
        return {"type": "array", "items": self.item.json_schema()}


class Obj(Spec):
    """An object with known fields (null = absent); other fields must match `extra`."""

    label = "an object"

    def __init__(self, fields: Mapping[str, Spec] | None = None, *, required: Iterable[str] = (),
                 extra: Spec = ANY):
        self.fields = dict(fields or {})
        self.required = tuple(required)
        self.extra = extra

    def problem(self, value: Any, path: str) -> str | None:
        if type(value) is not dict:
            return self._wrong(value, path)
        prefix = f"{path}." if path else ""
        for key in self.required:
            if value.get(key) is None:
                return f"field '{_show(prefix + key)}' is required"
        for key, item in value.items():
            spec = self.fields.get(key)
            if spec is None:
                spec = self.extra
            elif item is None:
                continue
            found = spec.problem(item, prefix + str(key))
            if found:
                return found
        return None

    def json_schema(self) -> dict:
        schema: dict[str, Any] = {"type": "object"}
        if self.fields:
            schema["properties"] = {k: v.json_schema() for k, v in self.fields.items()}
        if self.required:
            schema["required"] = list(self.required)
        if self.extra is not ANY:
            schema["additionalProperties"] = self.extra.json_schema()
        return schema

    def with_fields(self, fields: dict[str, Spec], required: Iterable[str] = ()) -> "Obj":
        return Obj({**self.fields, **fields}, required=(*self.required, *required), extra=self.extra)


class MapOf(Obj):
    """An object whose every value matches `value` (keys are free)."""

    def __init__(self, value: Spec):
        super().__init__(extra=value)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests lists/objects more than `limit` levels (iterative: never recurses)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node if type(node) is list else ()
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def check(spec: Spec, value: Any, path: str = "") -> None:
    """Raise the protocol's validation error (400/12) for the first field of `value` that does
    not match `spec`."""
    found = spec.problem(value, path)
    if found:
        raise errors.validation(found)
