"""Endpoint registry: `@endpoint("tasks.create")` binds a handler to a ClearML endpoint name.

A handler takes `(ctx: CallContext, req: Request)` and returns the response `data` dict
(sync or async). `Request` wraps the JSON body with typed accessors that raise the
protocol's validation errors, so handlers never repeat type checks.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from server import errors

if TYPE_CHECKING:
    from server.auth.keys import Identity
    from server.notify import Notifier
    from server.storage.store import Store

Handler = Callable[["CallContext", "Request"], Any]
_HANDLERS: dict[str, Handler] = {}
_PUBLIC: set[str] = set()
ID_RE = re.compile(r"^[0-9a-f]{32}$")
INT_TEXT_RE = re.compile(r"^-?[0-9]{1,19}$")
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


def endpoint(name: str, *, public: bool = False) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        if public:
            _PUBLIC.add(name)
        return fn

    return register


def lookup(name: str) -> Handler | None:
    return _HANDLERS.get(name)


def is_public(name: str) -> bool:
    return name in _PUBLIC


def names() -> list[str]:
    return sorted(_HANDLERS)


@dataclass
class CallContext:
    store: "Store"
    identity: "Identity"
    endpoint: str
    version: str
    worker: str = ""
    notifier: "Notifier | None" = None
    settings: Any = None
    authorization: str = ""    # the caller's Authorization header (auth.login reads it)
    client_ip: str = ""
    is_disconnected: Callable[[], Awaitable[bool]] | None = None  # a long poll stops when the caller left

    @property
    def version_tuple(self) -> tuple[int, int]:
        major, _, minor = self.version.partition(".")
        return int(major), int(minor or 0)


_MISSING = object()


class Request:
    """Typed view of a request body. Unknown fields are ignored by construction."""

    def __init__(self, body: dict[str, Any]):
        self.body = body

    def __contains__(self, key: str) -> bool:
        return key in self.body and self.body[key] is not None

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.body.get(key, default)
        return default if value is None else value

    def _typed(self, key: str, types: tuple[type, ...], label: str, default: Any, required: bool) -> Any:
        value = self.body.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise errors.missing_field(key)
            return default
        if isinstance(value, bool) and bool not in types:
            raise errors.validation(f"field '{key}' must be {label}, got {value!r}")
        if not isinstance(value, types):
            raise errors.validation(f"field '{key}' must be {label}, got {type(value).__name__}")
        return value

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        return self._typed(key, (str,), "a string", default, required)

    def integer(self, key: str, default: int | None = None, *, required: bool = False) -> Any:
        """A 64-bit integer; numeric strings and whole floats are accepted (query strings, JS clients)."""
        value = self.body.get(key)
        if isinstance(value, str) and INT_TEXT_RE.match(value) or isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            value = self._typed(key, (int,), "an integer", default, required)
        if value is not None and not INT64_MIN <= value <= INT64_MAX:
            raise errors.validation(f"field '{key}' must be a 64-bit integer")
        return value

    def number(self, key: str, default: float | None = None, *, required: bool = False) -> Any:
        value = self._typed(key, (int, float), "a number", default, required)
        if value is None:
            return None
        value = float(value)
        if not math.isfinite(value):
            raise errors.validation(f"field '{key}' must be a finite number")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.body.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, int):
            return bool(value)
        raise errors.validation(f"field '{key}' must be a boolean, got {value!r}")

    def mapping(self, key: str, default: dict[str, Any] | None = None, *, required: bool = False) -> Any:
        return self._typed(key, (dict,), "an object", default, required)

    def array(self, key: str, default: list[Any] | None = None, *, required: bool = False) -> Any:
        """A list of values; a single scalar is accepted as a one-item list (as the reference server does)."""
        value = self.body.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return [value]
        return self._typed(key, (list,), "a list", default, required)

    def str_list(self, key: str, default: list[str] | None = None) -> list[str] | None:
        values: list[str] | None = self.array(key, default)
        if values is None:
            return None
        if not all(isinstance(v, str) for v in values):
            raise errors.validation(f"field '{key}' must be a list of strings")
        return values

    def id(self, key: str, kind: str, *, required: bool = True) -> Any:
        value = self.text(key, required=required)
        if value is not None and not value:
            raise errors.missing_field(key)
        return value
