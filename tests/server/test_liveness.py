"""The checkout check of PostgreSQL's pooled connections (server/storage/liveness.py): a round
trip only when the connection may be dead. The restart itself is tests/server/test_replicas.py's
and test_pg_restart_pipelined.py's."""
from __future__ import annotations

import pytest

from server.storage.liveness import PING_IDLE_S, verdict


@pytest.mark.parametrize("closed, readable, idle_s, expected", [
    # closed  readable  idle (s)            verdict
    (True, False, 0.0, "dead"),              # psycopg saw it break: replace, no ping
    (True, True, 100.0, "dead"),
    (False, True, 0.0, "ping"),              # the server said something (a termination notice, EOF)
    (False, False, PING_IDLE_S + 1, "ping"),  # idle long: a silent drop is possible
    (False, False, PING_IDLE_S, "use"),
    (False, False, 0.01, "use"),             # the busy case: handed out as it is, no round trip
])
def test_checkout_verdict(closed, readable, idle_s, expected):
    assert verdict(closed, readable, idle_s) == expected


def test_readable_tells_a_quiet_socket_from_one_the_server_ended():
    import socket
    from types import SimpleNamespace

    from server.storage.liveness import _readable

    ours, theirs = socket.socketpair()
    conn = SimpleNamespace(fileno=ours.fileno)
    try:
        assert not _readable(conn)          # idle, nothing said: used without a round trip
        theirs.close()                       # the server went away: end of file
        assert _readable(conn)
    finally:
        ours.close()
    assert _readable(SimpleNamespace(fileno=lambda: -1))  # no socket at all: suspect
