"""HTTP client for the ClearML REST API (see shared/reference/CLEARML_API.md §1-2).

Every call is a POST of a JSON body to `{api_server}/[v{version}/]{service}.{action}`; the answer
is the `{meta, data}` envelope, and `call` returns `data`. Failures become Shipyard errors:

    meta.result_code != 200          ServerError(code, subcode, endpoint), message has result_msg
    401 after one token refresh      AuthError
    connection refused/reset, 429,   retried with capped exponential backoff until the call's
      502, 503, 504                  deadline, then ServerUnreachable
    no answer within the timeout     ServerUnreachable at once: the server may have acted on the
                                     request (queues.get_next_task pops), so it is not repeated

The token comes from `auth.login` with HTTP Basic credentials. It is a JWT; like the real
clients we read its `exp` without verifying the signature and log in again shortly before it
expires. One client is safe to share between threads (one transport, a lock for logins). The
transport (shipyard/client/transport.py) is http.client's keep-alive connections, or requests
where the environment needs it (a proxy): the same calls, errors and retries either way.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from shipyard import __version__
from shipyard.client.transport import ConnectFailed, NoAnswer, Reply, TLSFailed, Transport, make_transport
from shipyard.errors import AuthError, ServerError, ServerUnreachable

if TYPE_CHECKING:
    from shipyard.client.config import Settings

__all__ = ["ApiClient", "CLIENT_HEADER", "JSON_LINES"]

log = logging.getLogger(__name__)

CLIENT_HEADER = f"shipyard-{__version__}"
JSON = "application/json"
JSON_LINES = "application/json-lines"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRY_DEADLINE_S = 60.0
EVENTS_RETRY_DEADLINE_S = 10.0  # the log shipper spools and retries itself: fail fast to it
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
REFRESH_AHEAD_S = 60.0
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})


class ApiClient:
    """A logged-in connection to one ClearML-compatible API server."""

    def __init__(
        self,
        api_server: str,
        access_key: str,
        secret_key: str,
        worker_id: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry_deadline_s: float = DEFAULT_RETRY_DEADLINE_S,
        verify_ssl: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.api_server = api_server.rstrip("/")
        self.timeout = timeout
        self.retry_deadline_s = retry_deadline_s
        self._credentials = (access_key, secret_key)
        self._sleep = sleep
        self._clock = clock
        headers = {"X-ClearML-Client": CLIENT_HEADER, **({"X-ClearML-Worker": worker_id} if worker_id else {})}
        self._transport: Transport = make_transport(headers, verify=verify_ssl)
        self._login_lock = threading.Lock()
        self._token: str | None = None
        self._claims: Mapping[str, Any] = {}
        self._refresh_at = float("inf")

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> ApiClient:
        api = settings.api
        return cls(
            api.api_server, api.access_key, api.secret_key, settings.agent.worker_id,
            verify_ssl=api.verify_ssl, **options,
        )

    # --- public calls ---------------------------------------------------------------------------

    def call(
        self,
        endpoint: str,
        data: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        timeout: float | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, Any]:
        """POST `data` to `service.action` and return the envelope's `data` ({} when empty)."""
        body = json.dumps(dict(data or {})).encode()
        return self._authorized(endpoint, body, JSON, version=version, timeout=timeout, deadline_s=deadline_s)

    def add_events(
        self, events: Iterable[Mapping[str, Any]], *, deadline_s: float = EVENTS_RETRY_DEADLINE_S
    ) -> dict[str, Any]:
        """Send events with `events.add_batch` as json-lines; returns `{added, errors, ...}`.

        Gives up after `deadline_s` (short by default: the LogShipper spools and retries).
        """
        body = encode_events(events)
        if not body:
            return {"added": 0, "errors": 0}
        return self.add_encoded_events(body, deadline_s=deadline_s)

    def add_encoded_events(self, body: bytes, *, deadline_s: float = EVENTS_RETRY_DEADLINE_S) -> dict[str, Any]:
        """`add_events` of a body `encode_events` made."""
        return self._authorized("events.add_batch", body, JSON_LINES, deadline_s=deadline_s)

    def server_info(self) -> dict[str, Any]:
        """`server.info` data, or {} from a server that doesn't have it (404)."""
        try:
            return self.call("server.info")
        except ServerError as exc:
            if exc.code == 404 and not isinstance(exc, AuthError):
                return {}
            raise

    def login(self) -> str:
        """Get a fresh token with `auth.login` (HTTP Basic). Raises AuthError if refused."""
        with self._login_lock:
            return self._login()

    @property
    def claims(self) -> Mapping[str, Any]:
        """Claims of the current token (api_version, server_version, feature_set, exp...)."""
        return self._claims

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- token handling -------------------------------------------------------------------------

    def _login(self) -> str:
        response = self._send(
            self._url("auth.login", None), b"", {"Content-Type": JSON}, auth=self._credentials
        )
        if response.status_code in (401, 403):
            meta = _meta(response)
            raise AuthError(
                f"auth.login refused the credentials: {meta.get('result_msg') or response.reason}",
                code=response.status_code, subcode=int(meta.get("result_subcode") or 0), endpoint="auth.login",
            )
        token = self._unwrap("auth.login", response).get("token")
        if not isinstance(token, str) or not token:
            raise AuthError(
                f"auth.login at {self.api_server} returned no token; is api_server the API (not web) address?",
                endpoint="auth.login",
            )
        self._set_token(token)
        return token

    def _current_token(self) -> str:
        with self._login_lock:
            if self._token is None or time.time() >= self._refresh_at:
                return self._login()
            return self._token

    def _refreshed_token(self, rejected: str) -> str:
        """Log in again unless another thread already replaced the rejected token."""
        with self._login_lock:
            if self._token == rejected or self._token is None:
                return self._login()
            return self._token

    def _set_token(self, token: str) -> None:
        self._token = token
        self._claims = _decode_claims(token)
        self._refresh_at = _refresh_time(self._claims, time.time())

    # --- transport ------------------------------------------------------------------------------

    def _authorized(
        self,
        endpoint: str,
        body: bytes,
        content_type: str,
        *,
        version: str | None = None,
        timeout: float | None = None,
        deadline_s: float | None = None,
    ) -> dict[str, Any]:
        url = self._url(endpoint, version)
        token = self._current_token()
        response = self._send(url, body, _headers(content_type, token), timeout=timeout, deadline_s=deadline_s)
        if response.status_code == 401:
            token = self._refreshed_token(token)
            response = self._send(url, body, _headers(content_type, token), timeout=timeout, deadline_s=deadline_s)
            if response.status_code == 401:
                meta = _meta(response)
                raise AuthError(
                    f"{endpoint}: token rejected after a fresh login: {meta.get('result_msg') or response.reason}",
                    code=401, subcode=int(meta.get("result_subcode") or 0), endpoint=endpoint,
                )
        return self._unwrap(endpoint, response)

    def _send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        deadline_s: float | None = None,
    ) -> Reply:
        """POST once, retrying only failures where the server can't have acted on the request."""
        timeout = self.timeout if timeout is None else timeout
        give_up_at = self._clock() + (self.retry_deadline_s if deadline_s is None else deadline_s)
        delay = BACKOFF_INITIAL_S
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._transport.post(url, body, headers, auth=auth, timeout=timeout)
            except TLSFailed as exc:
                raise ServerUnreachable(f"{url}: TLS failed, not retried (see api.verify_certificate): {exc}") from exc
            except ConnectFailed as exc:
                reason = f"cannot connect: {exc}"
            except NoAnswer as exc:
                raise ServerUnreachable(f"{url}: no complete answer within {timeout:g}s ({exc})") from exc
            else:
                if response.status_code not in TRANSIENT_STATUSES:
                    return response
                reason = f"HTTP {response.status_code}"
                delay = max(delay, _retry_after(response))
            delay = min(delay, BACKOFF_MAX_S)
            if self._clock() + delay > give_up_at:
                raise ServerUnreachable(f"{url}: {reason} (gave up after {attempt} attempt(s))")
            log.log(logging.WARNING if attempt == 1 else logging.DEBUG, "%s: %s; retrying in %.1fs", url, reason, delay)
            self._sleep(delay)
            delay *= 2

    def _url(self, endpoint: str, version: str | None) -> str:
        if version:
            return f"{self.api_server}/v{version.lstrip('v')}/{endpoint}"
        return f"{self.api_server}/{endpoint}"

    @staticmethod
    def _unwrap(endpoint: str, response: Reply) -> dict[str, Any]:
        """The envelope's data, or ServerError carrying result_code/subcode/msg."""
        try:
            payload = response.json()
        except ValueError:
            raise ServerError(
                f"{endpoint}: HTTP {response.status_code}, not an API response: {response.text[:200]!r}",
                code=response.status_code, endpoint=endpoint,
            ) from None
        meta = payload.get("meta") if isinstance(payload, dict) else None
        if not isinstance(meta, dict):
            raise ServerError(
                f"{endpoint}: HTTP {response.status_code}, response has no meta", code=response.status_code,
                endpoint=endpoint,
            )
        code = int(meta.get("result_code") or response.status_code)
        if code != 200 or response.status_code != 200:
            subcode = int(meta.get("result_subcode") or 0)
            raise ServerError(
                f"{endpoint} failed ({code}/{subcode}): {meta.get('result_msg') or response.reason}",
                code=code, subcode=subcode, endpoint=endpoint,
            )
        data = payload.get("data")
        return data if isinstance(data, dict) else {}


def _headers(content_type: str, token: str) -> dict[str, str]:
    return {"Content-Type": content_type, "Authorization": f"Bearer {token}"}


def _meta(response: Reply) -> Mapping[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    meta = payload.get("meta") if isinstance(payload, dict) else None
    return meta if isinstance(meta, dict) else {}


def _decode_claims(token: str) -> Mapping[str, Any]:
    """JWT claims, read without verifying the signature (only the server can); {} if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:  # the payload is base64url JSON; PyJWT would also load `cryptography` (~10 MB) to read it
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _refresh_time(claims: Mapping[str, Any], now: float) -> float:
    """When to log in again: a minute before `exp` (half the lifetime for short tokens)."""
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        return float("inf")
    issued = claims.get("iat")
    lifetime = exp - (issued if isinstance(issued, (int, float)) else now)
    return exp - min(REFRESH_AHEAD_S, max(lifetime, 0) / 2)


def _retry_after(response: Reply) -> float:
    try:
        return float(response.headers.get("retry-after", 0))
    except ValueError:
        return 0.0


def encode_events(events: Iterable[Mapping[str, Any]]) -> bytes:
    """`events` as an events.add_batch JSON-lines body (b"" for none). Log events (strings and
    integers only) go through orjson, ~10x faster on a chatty task's 64 KiB messages; anything
    else, or what orjson refuses (a lone surrogate), through the standard encoder as before."""
    import orjson  # here, not at the top: an idle daemon never needs it (issue 24's idle RSS)

    lines: list[bytes] = []
    for event in events:
        if event.get("type") == "log":
            try:
                lines.append(orjson.dumps(event))
                continue
            except TypeError:  # orjson.JSONEncodeError is a TypeError
                pass
        lines.append(json.dumps(event, separators=(",", ":")).encode())
    return b"\n".join(lines)
