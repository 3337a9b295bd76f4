"""Read timeouts for the three listeners: slow clients cannot hold connections open.

uvicorn closes idle keep-alive connections but has no limit on how long a client may take to
send a request: one that trickles a header byte a second keeps its connection (a file handle,
a slot) forever, and a thousand of them starve real clients. `guarded_protocol()` returns
uvicorn's httptools protocol with two timers, as nginx's `client_header_timeout` and
`client_body_timeout`:

    headers  the request line and headers must be complete within `header_timeout_s` of the
             connection opening (first request) or of the request's first byte (later ones);
             else 408 and close.
    body     no more than `body_timeout_s` may pass between two pieces of the body; else the
             connection closes and the app's `receive()` reports a disconnect.
Time during which the server itself has paused reading (the app has not consumed the body yet,
a pipelined request waits its turn) does not count against the client.

At most one timer per connection: armed when it opens and while a request is incomplete after
a read. A request that arrives in one piece on a kept-alive connection arms none, so the hot
path costs a few attribute writes.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from server.rpc.onewrite import OneWrite

log = logging.getLogger("shipyard.server.http")

_DONE, _HEADERS, _BODY = range(3)
_TIMEOUT_TEXT = b"Request headers took too long.\n"
_REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_TEXT), _TIMEOUT_TEXT))


if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Protocol
else:
    _Protocol = object  # httptools is optional: the base class is joined in guarded_protocol()


def guarded_protocol(header_timeout_s: float, body_timeout_s: float) -> Any:
    """The protocol class for `uvicorn.Config(http=...)` (which also sends each response in one
    write: server/rpc/onewrite.py), or "auto" where httptools is missing
    (then only uvicorn's own limits apply, and a warning says so)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        log.warning("httptools is not installed: no header/body read timeouts on the listeners")
        return "auto"

    class GuardedHttpToolsProtocol(_ReadGuard, OneWrite, HttpToolsProtocol):  # OneWrite: server/rpc/onewrite.py
        header_timeout = header_timeout_s
        body_timeout = body_timeout_s

    return GuardedHttpToolsProtocol


class _ReadGuard(_Protocol):
    """The timers, mixed in before uvicorn's httptools protocol (see the module docstring)."""

    header_timeout: float
    body_timeout: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _DONE
        self._since = 0.0  # headers: when the request began; body: when data last came
        self._guard: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase, self._since = _HEADERS, self.loop.time()
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        phase = self._phase
        if phase == _BODY:
            self._since = self.loop.time()
            if self._guard is None:
                self._arm(self.body_timeout)
        elif phase == _HEADERS:
            if self._guard is None:
                self._arm(self.header_timeout)
        elif self._guard is not None:
            self._disarm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != _HEADERS:
            self._phase, self._since = _HEADERS, self.loop.time()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase, self._since = _BODY, self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = _DONE  # until the next request begins; uvicorn's keep-alive timeout rules

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._guard = self.loop.call_later(delay, self._expire)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _expire(self) -> None:
        self._guard = None
        if self.transport.is_closing() or self._phase not in (_HEADERS, _BODY):
            return
        now = self.loop.time()
        if self.flow.read_paused:
            self._since = now  # the server stopped reading (app behind, pipelining), not the client
        limit = self.header_timeout if self._phase == _HEADERS else self.body_timeout
        left = self._since + limit - now
        if left > 0:
            self._arm(left)
            return
        log.debug("closing %s: request %s not received within %.0f s", self.client,
                  "headers" if self._phase == _HEADERS else "body data", limit)
        if self._phase == _HEADERS:
            self.transport.write(_REQUEST_TIMEOUT)
        self.transport.close()
