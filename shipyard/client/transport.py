"""How `ApiClient` (shipyard/client/api.py) sends one POST: a `Reply` back, or a transport error.

    LeanTransport       keep-alive connections of the standard library's http.client, a small
                        pool shared between threads: ~20 ms of imports where requests costs ~130
                        (issue 22: the compute node's `shipyard execute`, a fresh process per task)
    RequestsTransport   a requests.Session, as the client always used: chosen where the lean one
                        would behave differently (a proxy in the environment, TLS without
                        verification), and handed any redirect the lean one receives
    make_transport()    the lean one unless the environment needs requests

The errors, and what the client does with each:

    TransportError      base
      TLSFailed         the TLS handshake or the certificate check failed: not retried
      ConnectFailed     no connection, or it broke before an answer came: retried
      NoAnswer          no complete answer within the timeout: not retried (the server may have acted)

Like requests, the lean transport verifies TLS against REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else
certifi's bundle; before reusing an idle connection it checks that the server has not closed it.
One difference, on purpose: an answer whose body stops coming after its status line is NoAnswer
here (requests called a late body a connection error, which the client retried): the server has
acted by then, and the client's rule is not to repeat such a call.
Neither transport logs: headers carry the credentials.
"""
from __future__ import annotations

import http.client
import json
import os
import select
import socket
import ssl
import threading
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

__all__ = ["ConnectFailed", "LeanTransport", "NoAnswer", "Reply", "RequestsTransport", "TLSFailed",
           "Transport", "TransportError", "make_transport"]

POOL_SIZE = 10
"""Idle connections kept per server (requests' default pool size)."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
PROXY_VARIABLES = frozenset({"http_proxy", "https_proxy", "all_proxy"})
"""The variables (any case) by which requests would send an API call through a proxy."""


class TransportError(Exception):
    """The request got no usable HTTP answer."""


class TLSFailed(TransportError):
    """The TLS handshake or the certificate check failed."""


class ConnectFailed(TransportError):
    """No connection, or it broke before any answer: the server did not act on the request."""


class NoAnswer(TransportError):
    """No complete answer within the timeout: the server may have acted on the request."""


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, read whole."""

    status_code: int
    reason: str
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    """Header names in lower case."""

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Transport(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str], *, auth: tuple[str, str] | None = None,
             timeout: float) -> Reply:
        """POST `body` to `url` with `headers` (and HTTP Basic `auth`); the answer, whatever its status."""
        ...

    def close(self) -> None:
        ...


def make_transport(headers: Mapping[str, str], *, verify: bool = True,
                   environ: Mapping[str, str] | None = None) -> Transport:
    """The lean transport, unless the environment names a proxy or TLS is not verified: requests
    then, which honours HTTP(S)_PROXY/NO_PROXY and warns of unverified TLS on each call."""
    environ = os.environ if environ is None else environ
    proxied = any(key.lower() in PROXY_VARIABLES and value for key, value in environ.items())
    if proxied or not verify:
        return RequestsTransport(headers, verify=verify)
    return LeanTransport(headers, environ=environ)


class LeanTransport:
    """http.client connections, kept alive and shared between threads (`POOL_SIZE` idle at most)."""

    def __init__(self, headers: Mapping[str, str], *, environ: Mapping[str, str] | None = None):
        self.headers = dict(headers)
        self._environ = os.environ if environ is None else environ
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._redirected: RequestsTransport | None = None

    def post(self, url: str, body: bytes, headers: Mapping[str, str], *, auth: tuple[str, str] | None = None,
             timeout: float) -> Reply:
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {**self.headers, **headers, **({"Authorization": _basic(auth)} if auth else {})}
        conn = self._connection(key, timeout)
        try:
            reply, reusable = _exchange(conn, path, body, sent)
        except BaseException:
            conn.close()
            raise
        if reusable:
            self._keep(key, conn)
        else:
            conn.close()
        if reply.status_code in REDIRECTS and "location" in reply.headers:
            return self._requests().post(url, body, headers, auth=auth, timeout=timeout)   # as before: requests follows it
        return reply

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for conn in connections:
                conn.close()
        if self._redirected is not None:
            self._redirected.close()

    def _connection(self, key: tuple[str, str, int], timeout: float) -> http.client.HTTPConnection:
        """An idle connection the server has not closed, else a new one (connected here, so that
        a failure to connect is told apart from one to answer)."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(key, timeout)
            if _still_open(conn):
                conn.timeout = timeout
                assert conn.sock is not None
                conn.sock.settimeout(timeout)
                return conn
            conn.close()

    def _connect(self, key: tuple[str, str, int], timeout: float) -> http.client.HTTPConnection:
        scheme, host, port = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:   # the certificate check included (SSLCertVerificationError)
            conn.close()
            raise TLSFailed(str(exc)) from exc
        except OSError as exc:        # refused, unreachable, unknown host, connect timeout
            conn.close()
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _keep(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < POOL_SIZE:
                idle.append(conn)
                return
        conn.close()

    def _tls_context(self) -> ssl.SSLContext:
        """Verified against the bundle requests would use: REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, certifi's."""
        if self._tls is None:
            bundle = self._environ.get("REQUESTS_CA_BUNDLE") or self._environ.get("CURL_CA_BUNDLE")
            if not bundle:
                import certifi  # only for https: its import is ~10 ms

                bundle = certifi.where()
            if os.path.isdir(bundle):
                self._tls = ssl.create_default_context(capath=bundle)
            else:
                self._tls = ssl.create_default_context(cafile=bundle)
        return self._tls

    def _requests(self) -> RequestsTransport:
        if self._redirected is None:
            self._redirected = RequestsTransport(self.headers)
        return self._redirected


def _exchange(conn: http.client.HTTPConnection, path: str, body: bytes,
              headers: Mapping[str, str]) -> tuple[Reply, bool]:
    """One request on `conn`: the reply, and whether the connection may carry another."""
    try:
        conn.request("POST", path, body=body, headers=dict(headers))
    except ssl.SSLError as exc:
        raise TLSFailed(str(exc)) from exc
    except OSError as exc:             # the server closed a kept connection, a reset
        raise ConnectFailed(str(exc) or type(exc).__name__) from exc
    try:
        response = conn.getresponse()
    except TimeoutError as exc:
        raise NoAnswer(f"read timed out ({exc})") from exc
    except ssl.SSLError as exc:
        raise TLSFailed(str(exc)) from exc
    except (http.client.HTTPException, OSError) as exc:   # closed or garbled before any answer, as requests sees it
        raise ConnectFailed(str(exc) or type(exc).__name__) from exc
    try:
        content = response.read()
    except (http.client.HTTPException, OSError) as exc:   # a cut or late body: the server has acted
        raise NoAnswer(f"incomplete answer ({exc or type(exc).__name__})") from exc
    reply = Reply(response.status, response.reason, content, {k.lower(): v for k, v in response.getheaders()})
    return reply, not response.will_close


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection is readable only when the server closed it (or sent junk)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        poller = select.poll()   # not select.select: a busy process may hold descriptors past 1024
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def _basic(auth: tuple[str, str]) -> str:
    """HTTP Basic credentials, encoded as requests encodes them (latin-1)."""
    user, password = auth
    return "Basic " + b64encode(f"{user}:{password}".encode("latin1")).decode()


class RequestsTransport:
    """A requests.Session: proxies from the environment, unverified TLS (with its warnings), redirects."""

    def __init__(self, headers: Mapping[str, str], *, verify: bool = True):
        import requests

        self._requests = requests
        self._session = requests.Session()
        self._session.verify = verify
        self._session.headers.update(headers)

    def post(self, url: str, body: bytes, headers: Mapping[str, str], *, auth: tuple[str, str] | None = None,
             timeout: float) -> Reply:
        exceptions = self._requests.exceptions
        try:
            response = self._session.post(url, data=body, headers=headers, auth=auth, timeout=timeout)
            content = response.content
        except exceptions.SSLError as exc:
            raise TLSFailed(str(exc)) from exc
        except exceptions.ConnectionError as exc:
            raise ConnectFailed(str(exc)) from exc
        except (exceptions.Timeout, exceptions.ChunkedEncodingError) as exc:
            raise NoAnswer(str(exc)) from exc
        return Reply(response.status_code, response.reason or "", content,
                     {k.lower(): v for k, v in response.headers.items()})

    def close(self) -> None:
        self._session.close()
