"""Fast JSON for the server's hot paths (orjson), with the standard library's leniency kept:
clients may send NaN/Infinity (Python's json writes them), which strict parsers refuse."""
from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # NaN, Infinity, or an error with the standard message


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS, default=str)


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()
