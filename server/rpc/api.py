"""The API listener: ClearML's `/{service}.{action}` protocol as a bare ASGI app on uvicorn.

Request → (version, endpoint name) from the path → body from JSON, JSON-lines or the query
string → token check → handler → the `{meta, data}` envelope. Every failure, including
unknown endpoints and malformed bodies, is answered in the same envelope. Light calls run on
the event loop, the rest on the handler pool (server/offload.py decides).

Tokens come only in `Authorization: Bearer` (and Basic for `auth.login`), never from a cookie:
a page that a browser opens cannot make the browser authenticate it here. The web page's own
proxy (server/web_proxy.py) is the one cookie route; it checks the session itself and hands the
identity over on `ApiCall.identity`.
"""
from __future__ import annotations

import inspect
import logging
import random
import re
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Awaitable, Callable

from starlette.datastructures import QueryParams
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from server import errors, query
from server.auth.keys import ANONYMOUS, API_VERSION, Identity
from server.rpc import compat, jsonutil, offload, registry, schema
from server.rpc.registry import CallContext, Request
from server.state import ServerState
from server.storage import group
from server.storage.store import conflicted, database_unavailable, retrying
from shipyard.protocol import Subcode

log = logging.getLogger("shipyard.server.api")
PATH_RE = re.compile(r"^/?(v(?P<version>\d+\.?\d+)/)?(?P<name>[a-zA-Z_]\w+\.[a-zA-Z_]\w+)/?$")
MAX_BODY_BYTES = 64 * 1024 * 1024


def envelope_bytes(name: str, version: str, data: dict | None, code: int = 200, subcode: int = 0,
                   msg: str = "OK", error_data: dict | None = None) -> bytes:
    ids = f"{random.getrandbits(256):064x}"  # 32 hex digits each, like uuid4().hex; no syscall
    body = {
        "meta": {
            "id": ids[:32], "trx": ids[32:],
            "endpoint": {"name": name, "requested_version": version, "actual_version": API_VERSION},
            "result_code": code, "result_subcode": subcode, "result_msg": msg,
            "error_stack": None, "error_data": error_data or {},
        },
        "data": data if data is not None else {},
    }
    return jsonutil.dumps_bytes(body)


def envelope(name: str, version: str, data: dict | None, code: int = 200, subcode: int = 0,
             msg: str = "OK", error_data: dict | None = None) -> Response:
    return Response(envelope_bytes(name, version, data, code, subcode, msg, error_data), status_code=code,
                    media_type="application/json")


def _convert_scalar(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return jsonutil.number(value)
    except ValueError:
        return value


def _merge_query(body: dict, query: Any) -> dict:
    for key in query:
        values = [_convert_scalar(v) for v in query.getlist(key)]
        target = body
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise errors.validation(f"query argument '{key[:120]}' conflicts with the body's '{part[:120]}'")
        target[leaf] = values[0] if len(values) == 1 else values
    return body


@dataclass
class ApiCall:
    """One API request, taken from the ASGI scope (the API listener) or from a Starlette
    request (the web page's proxy): only what the dispatcher reads. `identity` is set by the
    web proxy alone, for a caller it signed in by the session cookie."""
    path: str
    headers: dict[str, str]
    query_string: bytes
    read_body: Callable[[], Awaitable[bytes]]  # read only once the caller is authenticated
    client_ip: str
    is_disconnected: Callable[[], Awaitable[bool]] | None = None
    identity: Identity | None = None


_WANTED_HEADERS = frozenset({b"authorization", b"content-type", b"content-encoding",
                             b"x-clearml-worker", b"x-trains-worker"})


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw if k in _WANTED_HEADERS}


async def _read_body(call: ApiCall) -> bytes:
    if call.headers.get("content-encoding"):
        raise errors.APIError(415, 0, "Content-Encoding is not supported")
    raw = await call.read_body()
    if len(raw) > MAX_BODY_BYTES:
        raise errors.APIError(413, 0, f"Request body too large ({len(raw)} bytes, limit {MAX_BODY_BYTES})")
    return raw


def _parse_body(call: ApiCall, raw: bytes) -> dict:
    ctype = call.headers.get("content-type", "")
    lines = "json-lines" in ctype or "jsonlines" in ctype or "ndjson" in ctype
    body: Any = {}
    if raw.strip():
        try:
            if lines:
                text = raw.decode("utf-8")
                body = {"__lines__": [jsonutil.loads(line) for line in text.split("\n") if line.strip()]}
            else:
                body = jsonutil.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            raise errors.APIError(400, Subcode.VALIDATION_ERROR,
                                  f"Malformed JSON body: {type(exc).__name__}: {exc}") from None
    if isinstance(body, list):
        body = {"__lines__": body}
    elif not isinstance(body, dict):
        raise errors.validation("request body must be a JSON object")
    elif "__lines__" in body and not lines:
        raise errors.validation("field '__lines__' is reserved (send a JSON list or JSON lines instead)")
    if call.query_string:
        _merge_query(body, QueryParams(call.query_string))
    # Nesting bound (JSON columns and encoders have one). JSON lines are events: events_ingest
    # checks those off its hot path. Counting brackets first keeps ordinary bodies walk-free.
    nesting = call.query_string.count(b".") + (0 if lines else raw.count(b"[") + raw.count(b"{"))
    if nesting > schema.MAX_DEPTH and schema.too_deep({k: v for k, v in body.items() if k != "__lines__"}):
        raise errors.validation(f"request body is nested deeper than {schema.MAX_DEPTH} levels")
    return body


async def _authenticate(state: ServerState, call: ApiCall, name: str) -> Identity:
    if call.identity is not None:  # the web proxy verified the session itself
        return call.identity
    if registry.is_public(name):
        return ANONYMOUS
    header = call.headers.get("authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not token:
        raise errors.unauthorized("Missing authorization token (log in with auth.login)", Subcode.NO_CREDENTIALS)
    identity = state.signer.verify(token)
    if not await state.key_active(identity.user):
        raise errors.unauthorized("Credentials for this token were revoked", Subcode.INVALID_CREDENTIALS)
    return identity


def _failure(name: str, version: str, exc: Exception) -> tuple[int, bytes]:
    """An unexpected error's answer: a retryable 503 while the database cannot be reached (a
    restart; nothing was committed) or after the handler pool closed (shutdown; the call never
    ran), else a 500 logged with its traceback."""
    if isinstance(exc, offload.PoolClosed):
        shutting_down = errors.shutting_down()
        return 503, _error_envelope(name, version, 503, shutting_down.subcode, shutting_down.msg)
    if conflicted(exc):  # still conflicting after its retries: a hot document
        log.warning("%s: %s", _printable(name), exc)
        return 503, _error_envelope(name, version, 503, 0, f"Busy: {exc}; nothing was changed, retry the call")
    if database_unavailable(exc):
        log.warning("%s: database unavailable (%s)", _printable(name), _printable(str(exc).splitlines()[0], 200))
        return 503, _error_envelope(name, version, 503, 0, "Database unavailable (restarting or unreachable); "
                                    "nothing was changed, retry the call")
    log.exception("internal error in %s", _printable(name))
    return 500, _error_envelope(name, version, 500, 0, f"Internal server error: {_describe(exc)}")


def _printable(text: Any, limit: int = 2000) -> str:
    """`text` as valid UTF-8 (lone surrogates and the like escaped), cut to `limit` characters."""
    text = str(text)
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - an exception whose message cannot even be formatted
        return type(exc).__name__


def _error_envelope(name: str, version: str, code: int, subcode: int, msg: str, data: dict | None = None) -> bytes:
    """The error envelope; if the message or its data cannot be encoded, the same envelope with a
    printable message and no data, so the caller always gets an answer inside the protocol."""
    try:
        return envelope_bytes(name, version, {}, code, subcode, msg, data)
    except Exception:  # noqa: BLE001 - e.g. orjson refusing a lone surrogate in the message
        return envelope_bytes(_printable(name, 200), _printable(version, 20), {}, code, subcode, _printable(msg))


def _unknown(name: str, version: str) -> errors.APIError:
    """No handler: a declined endpoint says so and why (400/1), any other is the protocol's 404."""
    reason = compat.unsupported_reason(name)
    return errors.not_found_endpoint(name, version) if reason is None else errors.not_supported(name, reason)


async def dispatch(state: ServerState, call: ApiCall) -> tuple[int, bytes | Response]:
    """Run one call: (HTTP status, the envelope's bytes), or a handler's own Response."""
    started = time.perf_counter()
    match = PATH_RE.match(call.path)
    name = match.group("name") if match else call.path.strip("/")
    version = (match.group("version") if match else None) or API_VERSION
    code = 200
    grouping = group.grouped()  # this call's transactions on the loop may share a COMMIT (storage/group.py)
    try:
        handler = registry.lookup(name) if match is not None else None
        if handler is None:
            raise _unknown(name, version)
        identity = await _authenticate(state, call, name)
        raw = await _read_body(call)
        headers = call.headers
        ctx = CallContext(store=state.store, identity=identity, endpoint=name, version=version,
                          worker=headers.get("x-clearml-worker", "") or headers.get("x-trains-worker", ""),
                          notifier=state.notifier, settings=state,
                          authorization=headers.get("authorization", ""), client_ip=call.client_ip,
                          is_disconnected=call.is_disconnected)
        if _is_async(handler):
            if state.handlers is None or len(raw) <= state.placement.max_body:
                result = handler(ctx, Request(_parse_body(call, raw)))
            else:  # a big body is parsed off the loop even for a coroutine handler
                result = handler(ctx, Request(await state.handlers.run(_parse_body, call, raw)))
        elif state.handlers is None:
            result = _invoke(handler, ctx, call, raw, state.query_budget_s)
        else:
            result = await _run_sync(state, handler, ctx, call, raw)
        if inspect.isawaitable(result):
            result = await result
        await group.committed()  # the answer waits for the COMMIT of the group its writes joined
        if isinstance(result, Response):
            return result.status_code, result
        return 200, result if isinstance(result, bytes) else envelope_bytes(name, version, result)
    except errors.APIError as exc:
        code = exc.code
        return code, _error_envelope(name, version, exc.code, exc.subcode, exc.msg, exc.data)
    except ConnectionAbortedError:
        code = 499  # the client left before sending its whole body: nobody to answer
        raise
    except Exception as exc:  # noqa: BLE001 - reported to the caller and logged with its traceback
        code, body = _failure(name, version, exc)
        return code, body
    finally:
        group.ungrouped(grouping)
        state.metrics.observe(name, code, time.perf_counter() - started)


_ASYNC: dict[Any, bool] = {}


def _is_async(handler: Any) -> bool:
    known = _ASYNC.get(handler)
    if known is None:
        known = _ASYNC[handler] = inspect.iscoroutinefunction(handler)
    return known


async def _run_sync(state: ServerState, handler: Any, ctx: CallContext, call: ApiCall, raw: bytes) -> Any:
    """A synchronous handler: on the loop when it is light and the database is SQLite and free
    (see server/rpc/offload.py), else on the handler pool."""
    gate, placement = state.store.gate, state.placement
    assert state.handlers is not None  # the caller runs sync handlers here only when the pool exists
    light = placement.inline(ctx.endpoint, len(raw))
    if light and gate is None:
        # PostgreSQL: a light call is a few round trips to the database, mostly waiting. On the
        # pool those waits overlap (the GIL is free meanwhile); on the loop each would stop every
        # other request. Not bound per caller: it is short, and it held the whole loop before.
        return await state.handlers.run(_invoke, handler, ctx, call, raw, None)
    if light and gate is not None and gate.acquire(blocking=False):
        cpu = time.thread_time()
        try:
            return _invoke(handler, ctx, call, raw, None)  # light calls run no get_all filters
        finally:
            gate.release()
            placement.took(ctx.endpoint, time.thread_time() - cpu)
    owner = ctx.identity.user or call.client_ip
    return await state.handlers.run(_invoke, handler, ctx, call, raw, state.query_budget_s, owner=owner,
                                    ingest=ctx.endpoint in offload.INGEST_ENDPOINTS)


def _call_handler(handler: Any, ctx: CallContext, call: ApiCall, raw: bytes) -> Any:
    """One run of a handler on a body parsed afresh (a conflict runs it again, on the same input)."""
    return handler(ctx, Request(_parse_body(call, raw)))


def _invoke(handler: Any, ctx: CallContext, call: ApiCall, raw: bytes, budget_s: float | None) -> Any:
    """Parse the body, run a synchronous handler and encode its answer: the part of a call that
    computes, run on a pool thread for most endpoints."""
    if budget_s is None:
        result = retrying(_call_handler, handler, ctx, call, raw)
    else:
        with query.time_budget(budget_s):
            result = retrying(_call_handler, handler, ctx, call, raw)
    if inspect.isawaitable(result) or isinstance(result, Response):
        return result
    return envelope_bytes(ctx.endpoint, ctx.version, result)


async def handle(request: HttpRequest, identity: Identity | None) -> Response:
    """Dispatch a Starlette request of the web page's `/api/` proxy, as `identity` (the session's,
    checked by the proxy; None for a public endpoint called without a session), and answer with a
    Response."""
    call = ApiCall(path=request.url.path, headers=_headers(request.scope["headers"]),
                   query_string=request.scope.get("query_string", b""), read_body=request.body,
                   client_ip=request.client.host if request.client else "",
                   is_disconnected=request.is_disconnected, identity=identity)
    code, result = await dispatch(request.app.state.shipyard, call)
    if isinstance(result, Response):
        return result
    return Response(result, status_code=code, media_type="application/json")


async def _receive_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client left before sending its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise errors.APIError(413, 0, f"Request body too large (over {MAX_BODY_BYTES} bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_json(send: Any, code: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": code,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(extra or ())]})
    await send({"type": "http.response.body", "body": body})


def _allowed_origin(state: ServerState, scope: dict) -> bytes | None:
    """The request's Origin when the server allows pages of that origin to call it (CORS,
    `cors_origins`; off by default). No credentials are ever allowed: this listener takes tokens
    in the Authorization header only, so a page of an allowed origin must bring its own token."""
    if not state.cors_origins:
        return None
    origin = dict(scope["headers"]).get(b"origin")
    if origin is None or origin.decode("latin-1").rstrip("/") not in state.cors_origins:
        return None
    return origin


def _cors_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]


async def _preflight(send: Any, scope: dict, origin: bytes) -> None:
    asked = dict(scope["headers"]).get(b"access-control-request-headers", b"authorization, content-type")
    await send({"type": "http.response.start", "status": 204, "headers": [
        *_cors_headers(origin), (b"access-control-allow-methods", b"GET, POST, PUT"),
        (b"access-control-allow-headers", asked), (b"access-control-max-age", b"600"),
        (b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


class ApiApp:
    """A bare ASGI app: every path goes to `dispatch`, without a router, middleware stack or
    request/response objects (their per-request cost showed up in profiles; the protocol has
    one route anyway)."""

    def __init__(self, state: ServerState):
        self.state = SimpleNamespace(shipyard=state)  # `request.app.state.shipyard`, as on a Starlette app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        origin = _allowed_origin(self.state.shipyard, scope)
        if origin is not None and scope["method"] == "OPTIONS":
            await _preflight(send, scope, origin)
            return
        if scope["method"] not in ("GET", "POST", "PUT"):
            await _send_json(send, 405, envelope_bytes(path.strip("/"), API_VERSION, {}, 405, 0,
                                                       f"Method {scope['method']} not allowed"))
            return
        client = scope.get("client")

        async def read_body() -> bytes:
            return await _receive_body(receive)

        async def is_disconnected() -> bool:
            return await HttpRequest(scope, receive).is_disconnected()

        call = ApiCall(path=path, headers=_headers(scope["headers"]), query_string=scope.get("query_string", b""),
                       read_body=read_body, client_ip=client[0] if client else "", is_disconnected=is_disconnected)
        try:
            code, result = await dispatch(self.state.shipyard, call)
        except ConnectionAbortedError:
            return
        extra = _cors_headers(origin) if origin is not None else None
        if isinstance(result, Response):
            for name, value in extra or ():
                result.headers[name.decode()] = value.decode("latin-1")
            scope["app"] = self
            await result(scope, receive, send)
        else:
            await _send_json(send, code, result, extra)


def build_api_app(state: ServerState) -> ApiApp:
    return ApiApp(state)
