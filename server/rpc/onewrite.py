"""One socket write per response: the writes a connection makes in one pass of the event loop
are sent together.

uvicorn writes a response's status line and headers when the app starts the response, and the
body when the app sends it: two `send()` calls, two TCP segments on the wire, and two wake-ups
of the client (on loopback the kernel runs the receiver's side of each in the sender's system
call). In profiles of the enqueue/pop hot path those writes were the largest single cost of a
call. `OneWrite`, mixed into the listeners' protocol (server/rpc/guard.py), gives uvicorn a
transport whose small writes are gathered and sent once, at the end of the loop pass
(`loop.call_soon`): the head and the body that follows it in the same pass go out as one.

    write(small)   kept; the first of a pass schedules the send
    write(large)   what is kept, then it, at once (no copy of big bodies)
    close/abort    what is kept is sent first (close) or dropped with the connection (abort)

Everything else (pause_reading, get_extra_info, is_closing...) is the transport's own.
"""
from __future__ import annotations

import asyncio
from typing import Any

SMALL = 64 * 1024  # writes up to this size are gathered; larger ones go out at once


class GatheredTransport:
    """A transport whose small writes of one loop pass are sent as one (see the module docstring)."""

    __slots__ = ("_transport", "_loop", "_parts")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        if len(data) > SMALL:
            self.flush()
            self._transport.write(data)
            return
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(data)

    def flush(self) -> None:
        parts, self._parts = self._parts, []
        if parts and not self._transport.is_closing():
            self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._parts = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWrite:
    """Mixed in before uvicorn's protocol: it is given a GatheredTransport."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        super().connection_made(GatheredTransport(transport, loop))  # type: ignore[misc]
