"""The API listener: ClearML's `/{service}.{action}` protocol over Starlette.

Request → (version, endpoint name) from the path → body from JSON, JSON-lines or the query
string → token check → handler → the `{meta, data}` envelope. Every failure, including
unknown endpoints and malformed bodies, is answered in the same envelope.
"""
from __future__ import annotations

import inspect
import json
import logging
import re
import time
import uuid
from typing import Any

from types import SimpleNamespace

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server import errors, jsonutil, registry
from server.auth import ANONYMOUS, API_VERSION, Identity
from server.registry import CallContext, Request
from server.state import ServerState

log = logging.getLogger("shipyard.server.api")
PATH_RE = re.compile(r"^/?(v(?P<version>\d+\.?\d+)/)?(?P<name>[a-zA-Z_]\w+\.[a-zA-Z_]\w+)/?$")
MAX_BODY_BYTES = 64 * 1024 * 1024


def envelope(name: str, version: str, data: dict | None, code: int = 200, subcode: int = 0,
             msg: str = "OK", error_data: dict | None = None) -> Response:
    body = {
        "meta": {
            "id": uuid.uuid4().hex, "trx": uuid.uuid4().hex,
            "endpoint": {"name": name, "requested_version": version, "actual_version": API_VERSION},
            "result_code": code, "result_subcode": subcode, "result_msg": msg,
            "error_stack": None, "error_data": error_data or {},
        },
        "data": data if data is not None else {},
    }
    return Response(jsonutil.dumps_bytes(body), status_code=code,
                    media_type="application/json")


def _convert_scalar(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _merge_query(body: dict, query: Any) -> dict:
    for key in query.keys():
        values = [_convert_scalar(v) for v in query.getlist(key)]
        target = body
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = values[0] if len(values) == 1 else values
    return body


async def _read_body(request: HttpRequest) -> dict:
    if request.headers.get("content-encoding"):
        raise errors.APIError(415, 0, "Content-Encoding is not supported")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise errors.APIError(413, 0, f"Request body too large ({len(raw)} bytes, limit {MAX_BODY_BYTES})")
    ctype = request.headers.get("content-type", "")
    body: Any = {}
    if raw.strip():
        try:
            if "json-lines" in ctype or "jsonlines" in ctype or "ndjson" in ctype:
                text = raw.decode("utf-8")
                body = {"__lines__": [jsonutil.loads(line) for line in text.split("\n") if line.strip()]}
            else:
                body = jsonutil.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise errors.APIError(400, 12, f"Malformed JSON body: {exc}") from None
    if isinstance(body, list):
        body = {"__lines__": body}
    if not isinstance(body, dict):
        raise errors.validation("request body must be a JSON object")
    return _merge_query(body, request.query_params)


def _authenticate(state: ServerState, request: HttpRequest, name: str) -> Identity:
    if registry.is_public(name):
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not token:
        token = request.cookies.get("clearml_token_basic", "") or request.cookies.get("shipyard_token", "")
    if not token:
        raise errors.unauthorized("Missing authorization token (log in with auth.login)", 20)
    identity = state.signer.verify(token)
    if not state.keys_active(identity.user):
        raise errors.unauthorized("Credentials for this token were revoked", 22)
    return identity


async def handle(request: HttpRequest) -> Response:
    state: ServerState = request.app.state.shipyard
    started = time.perf_counter()
    match = PATH_RE.match(request.url.path)
    name = match.group("name") if match else request.url.path.strip("/")
    version = (match.group("version") if match else None) or API_VERSION
    code = 200
    try:
        if match is None or registry.lookup(name) is None:
            raise errors.not_found_endpoint(name, version)
        handler = registry.lookup(name)
        identity = _authenticate(state, request, name)
        body = await _read_body(request)
        ctx = CallContext(store=state.store, identity=identity, endpoint=name, version=version,
                          worker=request.headers.get("x-clearml-worker", "") or request.headers.get("x-trains-worker", ""),
                          notifier=state.notifier, settings=state,
                          extra={"authorization": request.headers.get("authorization", ""),
                                 "is_disconnected": request.is_disconnected,
                                 "client_ip": request.client.host if request.client else ""})
        result = handler(ctx, Request(body))
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Response):
            return result
        return envelope(name, version, result)
    except errors.APIError as exc:
        code = exc.code
        return envelope(name, version, {}, exc.code, exc.subcode, exc.msg, exc.data)
    except Exception as exc:  # noqa: BLE001 - reported to the caller and logged with its traceback
        code = 500
        log.exception("internal error in %s", name)
        return envelope(name, version, {}, 500, 0, f"Internal server error: {type(exc).__name__}: {exc}")
    finally:
        state.metrics.observe(name, code, time.perf_counter() - started)


class ApiApp:
    """A bare ASGI app: every path goes to `handle`, without a router or middleware stack
    (their per-request cost showed up in profiles; the protocol has one route anyway)."""

    def __init__(self, state: ServerState):
        self.state = SimpleNamespace(shipyard=state)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        scope["app"] = self
        request = HttpRequest(scope, receive)
        if request.method not in ("GET", "POST", "PUT"):
            response: Response = envelope(request.url.path.strip("/"), API_VERSION, {}, 405, 0,
                                          f"Method {request.method} not allowed")
        else:
            response = await handle(request)
        await response(scope, receive, send)


def build_api_app(state: ServerState) -> ApiApp:
    return ApiApp(state)
