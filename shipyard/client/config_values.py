"""The casts of shipyard/client/config.py: a raw value (from HOCON, an env var or the CLI) to a
typed one, or ValueError with what was expected. `FIELDS` (config_fields.py) names one per setting;
config.py turns the ValueError into a ConfigError naming the key and the source.

    _text, _optional_text, _url, _bool          strings and flags
    _number, _seconds, _positive_seconds,
    _optional_seconds, _positive_int            numbers (seconds, counts)
    _path, _optional_path                       paths (`~` is expanded later, by config._derive)
    _args, _text_list, _patterns, _text_map     lists and maps; an env var or CLI string may hold JSON (_decoded)
    _credentials, GitCredential                 shipyard.git_credentials entries
    _package_manager, _uv_from_package_manager  agent.package_manager.type (PACKAGE_MANAGERS)

Pure: no I/O, no environment.
"""
from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shipyard.redact import Redactor


@dataclass(frozen=True)
class GitCredential:
    host: str
    user: str
    password: str


# --- casts: raw value from HOCON, an env var or the CLI -> typed value, or ValueError ----------


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return str(value).strip()


def _optional_text(value: Any) -> str | None:
    return _text(value) or None


def _url(value: Any) -> str:
    url = _text(value).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    return url


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = _text(value).lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        return float(_text(value))
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def _seconds(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number


def _positive_seconds(value: Any) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError(f"must be greater than 0, got {number}")
    return number


def _optional_seconds(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
        return None
    return _positive_seconds(value)


def _positive_int(value: Any) -> int:
    number = _number(value)
    if number != int(number) or number <= 0:
        raise ValueError(f"expected a positive whole number, got {value!r}")
    return int(number)


def _path(value: Any) -> Path:
    return Path(_text(value))


def _optional_path(value: Any) -> Path | None:
    text = _text(value)
    return Path(text) if text else None


def _args(value: Any) -> tuple[str, ...]:
    """Command-line arguments: a list, or one string split like a shell would (`--shm-size 8g -e A=1`)."""
    value = _decoded(value, list)
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise ValueError(f"cannot split {value!r} into arguments: {exc}") from None
    return tuple(_text(item) for item in value)


def _decoded(value: Any, kind: type) -> Any:
    """An env var or CLI string holding JSON (lists, objects) is decoded first."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(value, (kind, str)):
        raise ValueError(f"expected a {kind.__name__}, got {type(value).__name__}")
    return value


def _text_list(value: Any) -> tuple[str, ...]:
    value = _decoded(value, list)
    items = value.split(",") if isinstance(value, str) else value
    return tuple(text for text in (_text(item) for item in items) if text)


def _patterns(value: Any) -> tuple[str, ...]:
    patterns = _decoded(value, list)
    if isinstance(patterns, str):
        patterns = [patterns]
    patterns = tuple(_text(pattern) for pattern in patterns)
    try:
        Redactor(patterns=patterns)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return patterns


def _text_map(value: Any) -> Mapping[str, str]:
    mapping = _decoded(value, dict)
    if not isinstance(mapping, dict):
        raise ValueError("expected an object of NAME: value")
    return MappingProxyType({_text(name): _text(item) for name, item in mapping.items()})


def _credentials(value: Any) -> tuple[GitCredential, ...]:
    entries = _decoded(value, list)
    if isinstance(entries, str):
        raise ValueError("expected a list of {host, user, password}")
    credentials = []
    for entry in entries:
        if not isinstance(entry, dict) or not {"host", "user", "password"} <= entry.keys():
            raise ValueError("each entry needs host, user and password")
        credentials.append(GitCredential(_text(entry["host"]), _text(entry["user"]), _text(entry["password"])))
    return tuple(credentials)


PACKAGE_MANAGERS = ("pip", "uv", "poetry", "conda")
"""clearml-agent's agent.package_manager.type words (conda is read, and refused per task)."""


def _package_manager(value: Any) -> str:
    kind = _text(value).lower()
    if kind not in PACKAGE_MANAGERS:
        raise ValueError(f"expected one of {', '.join(PACKAGE_MANAGERS)}, not {kind!r}")
    return kind


def _uv_from_package_manager(value: Any) -> bool:
    """ClearML's agent.package_manager.type: pip means plain pip; uv and poetry install with uv
    (a poetry.lock is exported and installed by uv); conda tasks are refused at build time."""
    return _package_manager(value) != "pip"
