"""PostgreSQL's pooled connections: checked at checkout without a round trip when they can be.

SQLAlchemy's `pool_pre_ping` sends `SELECT 1` at every checkout, so every transaction paid one
round trip more than its statements (a `tasks.get_by_id` four instead of three; at load, each
round trip is a wait for the GIL and a CPU again). A connection that PostgreSQL ended (a
restart, an admin kill, an idle timeout) has had its socket closed by the server, so its
socket reads as readable while the pool holds it (the termination notice, or end of file);
psycopg itself marks a connection it saw break as closed. So at checkout:

    verdict(closed, readable, idle_s)   "dead": drop it, take a fresh one (psycopg saw it break)
                                        "ping": SELECT 1 first (the socket has something to say,
                                                or it sat idle longer than PING_IDLE_S: a path
                                                that dropped it silently, without a FIN)
                                        "use":  hand it out as it is

    watch(engine)   installs the check on an engine made with pool_pre_ping=False

A dead connection, or one that fails its ping, is replaced (DisconnectionError: the pool
connects afresh; if the server cannot be reached, that connect fails and the call gets the
usual 503). A server that dies between the checkout and the
statement is the same race as with pre-ping: the call gets the retryable 503.
"""
from __future__ import annotations

import select
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from shipyard import clock

PING_IDLE_S = 30.0  # a connection idle longer than this is pinged even with a quiet socket
_IDLE_SINCE = "shipyard_idle_since"


def verdict(closed: bool, readable: bool, idle_s: float, ping_idle_s: float = PING_IDLE_S) -> str:
    """What to do with a pooled connection at checkout (see the module docstring)."""
    if closed:
        return "dead"
    if readable or idle_s > ping_idle_s:
        return "ping"
    return "use"


def _readable(dbapi_conn: Any) -> bool:
    """Has the server sent something to an idle connection (a termination notice, end of file)?"""
    try:
        poller = select.poll()   # not select.select: a server with 1,000 long-polls has fds past 1024
        poller.register(dbapi_conn.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no socket any more: treat it as suspect
        return True


def watch(engine: Engine) -> None:
    """Check each checkout of `engine`'s pool as `verdict` says; ping with the dialect's ping."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = clock.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        idle_s = 0.0 if since is None else clock.monotonic() - since  # fresh: just connected
        what = verdict(bool(getattr(dbapi_conn, "closed", False)), _readable(dbapi_conn), idle_s, PING_IDLE_S)
        if what == "dead":
            raise DisconnectionError("the connection was closed")
        if what == "ping":
            try:
                dialect.do_ping(dbapi_conn)
            except dialect.loaded_dbapi.Error as exc:
                raise DisconnectionError(f"the connection failed its ping: {exc}") from exc
