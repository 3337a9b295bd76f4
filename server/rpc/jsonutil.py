"""Fast JSON for the server's hot paths (orjson), with the standard library's leniency kept:
clients may send NaN/Infinity (Python's json writes them), which strict parsers refuse.

What orjson refuses goes to the standard parser, which is made to hand back only what the
server can store and encode again: integers beyond 64 bits become floats as orjson makes them
(or are refused when even a float cannot hold them), and lone UTF-16 surrogates (`"\\ud800"`,
which Python's json writes for undecodable bytes) become U+FFFD.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS
_INT_MIN, _INT_MAX = -2 ** 63, 2 ** 64 - 1  # what orjson reads as an int (int64 and uint64)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_HINT = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")


def _int(text: str) -> int | float:
    if len(text) <= 20:
        value = int(text)
        if _INT_MIN <= value <= _INT_MAX:
            return value
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number out of range: {text[:24]}{'...' if len(text) > 24 else ''}")
    return number


_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")


def number(text: str) -> int | float:
    """A JSON number written as text (a query-string value) as the body parser would read it;
    ValueError if `text` is not one, or not even a float can hold it."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise ValueError(f"not a number: {text[:24]}")
    if match.group(1) is None and match.group(2) is None:
        return _int(text)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:24]}")
    return value


def _fix(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def _without_surrogates(value: Any) -> Any:
    """`value` with lone surrogates replaced in every string and key (iterative: the standard
    parser nests up to its recursion limit, deeper than a recursive walk could follow)."""
    if type(value) is str:
        return _fix(value)
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is list:
            _fix_list(node, stack)
        elif type(node) is dict:
            _fix_dict(node, stack)
    return value


def _fix_list(node: list, stack: list) -> None:
    """Fix the strings of one list in place; its containers go on `stack`."""
    for index, item in enumerate(node):
        if type(item) is str:
            node[index] = _fix(item)
        elif type(item) is list or type(item) is dict:
            stack.append(item)


def _fix_dict(node: dict, stack: list) -> None:
    """Fix the string values and keys of one dict in place; its containers go on `stack`."""
    for key, item in list(node.items()):
        if type(item) is str:
            item = _fix(item)
        elif type(item) is list or type(item) is dict:
            stack.append(item)
        if _SURROGATE.search(key):
            del node[key]
            key = _fix(key)
        node[key] = item


def loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # NaN, Infinity, huge numbers, lone surrogates, or an error with the standard message.
    text = data.decode("utf-8", "surrogatepass") if isinstance(data, (bytes, bytearray)) else data
    value = json.loads(text, parse_int=_int)
    return _without_surrogates(value) if _SURROGATE_HINT.search(text) else value


def dumps_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=_OPTIONS, default=str)


def dumps(value: Any) -> str:
    return dumps_bytes(value).decode()
