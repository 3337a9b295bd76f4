"""API errors as the ClearML protocol reports them: HTTP code, subcode and message.

Handlers raise `APIError` (or one of the named constructors below); the dispatcher turns it
into the standard envelope. The subcodes are `shipyard.protocol.Subcode`, numbered as the
reference server's error catalogue so clients that check them (e.g. 400/201 for an invalid
model) keep working.
"""
from __future__ import annotations

from typing import Any

from shipyard.protocol import Subcode

_INVALID_ID = {"task": Subcode.INVALID_TASK_ID, "model": Subcode.INVALID_MODEL_ID,
               "project": Subcode.INVALID_PROJECT_ID, "queue": Subcode.INVALID_QUEUE_ID}


class APIError(Exception):
    def __init__(self, code: int, subcode: int, msg: str, data: dict[str, Any] | None = None):
        super().__init__(msg)
        self.code = code
        self.subcode = subcode
        self.msg = msg
        self.data = data or {}


def bad_request(msg: str, subcode: int = Subcode.NONE) -> APIError:
    return APIError(400, subcode, msg)


def invalid_id(kind: str, value: Any) -> APIError:
    return APIError(400, _INVALID_ID.get(kind, Subcode.INVALID_ID), f"Invalid {kind} id: {kind}={value}")


def missing_field(*names: str) -> APIError:
    return APIError(400, Subcode.MISSING_REQUIRED_FIELDS, "Missing required fields: " + ", ".join(names))


def validation(msg: str) -> APIError:
    return APIError(400, Subcode.VALIDATION_ERROR, f"Validation error: {msg}")


def invalid_status(msg: str) -> APIError:
    return APIError(400, Subcode.INVALID_TASK_STATUS, msg)


def status_race(msg: str) -> APIError:
    return APIError(400, Subcode.FAILED_CHANGING_TASK_STATUS, msg)


def unauthorized(msg: str, subcode: int = Subcode.NO_CREDENTIALS) -> APIError:
    return APIError(401, subcode, msg)


def not_supported(name: str, reason: str) -> APIError:
    """An endpoint of the ClearML API that Shipyard declines on purpose (server/rpc/compat.py)."""
    return APIError(400, Subcode.NOT_SUPPORTED, f"Endpoint {name} is not supported in Shipyard: {reason}")


def shutting_down() -> APIError:
    """503, retryable: the server is stopping and did not run the call (another replica, or this
    one once restarted, can)."""
    return APIError(503, Subcode.NONE, "Server shutting down; nothing was changed, retry the call")


def not_found_endpoint(name: str, version: str) -> APIError:
    return APIError(404, Subcode.NONE, f"Unable to find endpoint for name {name} and version {version}")
