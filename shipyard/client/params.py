"""A task's hyperparameters changed from the command line (`shipyard task clone --set`), keeping
the type each parameter was recorded with.

ClearML stores every value as a string, next to a `type` field (the SDK writes the Python type's
name: "int", "float", "bool", "str", "list", "dict", "tuple"). A new value must parse as that type,
and is written back in the form the SDK writes (str() of the parsed value), so the task reads it
back as the same type. A parameter recorded without a type gets one from its value's shape.
"""
from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

from shipyard.errors import ConfigError

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _as_bool(raw: str) -> str:
    word = raw.strip().lower()
    if word in _TRUE | _FALSE:
        return str(word in _TRUE)
    raise ValueError(raw)


def _literal(kind: type) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not isinstance(ast.literal_eval(raw.strip()), kind):
            raise ValueError(raw)
        return raw.strip()
    return parse


_PARSERS: dict[str, Callable[[str], str]] = {
    "int": lambda raw: str(int(raw.strip())),
    "float": lambda raw: str(float(raw.strip())),
    "bool": _as_bool,
    "list": _literal(list),
    "tuple": _literal(tuple),
    "dict": _literal(dict),
}


def shape_type(value: str) -> str | None:
    """The type a value recorded without one looks like (None: a plain string)."""
    for kind in ("int", "float"):
        try:
            _PARSERS[kind](value)
            return kind
        except ValueError:
            continue
    return "bool" if value.strip() in ("True", "False") else None


def typed_value(path: str, original: Mapping[str, Any] | None, raw: str) -> dict[str, Any]:
    """The parameter item for `path` ("Section/name") set to `raw`, with the original's type and
    description; ConfigError naming the parameter when `raw` is not of that type."""
    section, _, name = path.partition("/")
    item: dict[str, Any] = {"section": section, "name": name, "value": raw}
    if original is None:
        return item
    kind = original.get("type") or shape_type(str(original.get("value") or ""))
    for extra in ("type", "description"):
        if original.get(extra) is not None:
            item[extra] = original[extra]
    parse = _PARSERS.get(str(kind))
    if parse is None:
        return item
    try:
        item["value"] = parse(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        article = "an" if str(kind)[:1] in "aeiou" else "a"
        raise ConfigError(f"--set {path}={raw}: {path} is {article} {kind} parameter (it was "
                          f"{original.get('value')!r}) and {raw!r} does not parse as {article} {kind}") from None
    return item


def override_items(hyperparams: Mapping[str, Any], overrides: list[str]) -> list[dict[str, Any]]:
    """`Section/name=value` strings (no section: Args; the section ends at the first "/", as in
    ClearML's `set_parameter`) as items for tasks.edit_hyper_params."""
    items = []
    for pair in overrides:
        path, sep, raw = pair.partition("=")
        if not sep or not path.strip("/"):
            raise ConfigError(f"--set expects Section/name=value, got '{pair}'")
        section, _, name = path.partition("/") if "/" in path else ("Args", "", path)  # names may hold "/"
        original = (hyperparams.get(section) or {}).get(name)
        items.append(typed_value(f"{section}/{name}", original if isinstance(original, Mapping) else None, raw))
    return items
