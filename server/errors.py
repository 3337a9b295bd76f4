"""API errors as the ClearML protocol reports them: HTTP code, subcode and message.

Handlers raise `APIError` (or one of the named constructors below); the dispatcher turns it
into the standard envelope. The codes follow the reference server's error catalogue so
clients that check subcodes (e.g. 400/201 for an invalid model) keep working.
"""
from __future__ import annotations

from typing import Any


class APIError(Exception):
    def __init__(self, code: int, subcode: int, msg: str, data: dict[str, Any] | None = None):
        super().__init__(msg)
        self.code = code
        self.subcode = subcode
        self.msg = msg
        self.data = data or {}


def bad_request(msg: str, subcode: int = 0) -> APIError:
    return APIError(400, subcode, msg)


def invalid_id(kind: str, value: Any) -> APIError:
    subcodes = {"task": 101, "model": 201, "project": 401, "queue": 701}
    return APIError(400, subcodes.get(kind, 10), f"Invalid {kind} id: {kind}={value}")


def missing_field(*names: str) -> APIError:
    return APIError(400, 11, "Missing required fields: " + ", ".join(names))


def validation(msg: str) -> APIError:
    return APIError(400, 12, f"Validation error: {msg}")


def invalid_status(msg: str) -> APIError:
    return APIError(400, 110, msg)


def status_race(msg: str) -> APIError:
    return APIError(400, 121, msg)


def unauthorized(msg: str, subcode: int = 20) -> APIError:
    return APIError(401, subcode, msg)


def not_found_endpoint(name: str, version: str) -> APIError:
    return APIError(404, 0, f"Unable to find endpoint for name {name} and version {version}")
