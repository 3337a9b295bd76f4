"""Where a token's key-activity look-up runs (server/state.py `ServerState.key_active`): on
PostgreSQL a look-up the cache cannot answer goes to the handler pool, so the event loop never
waits through its round trips; a fresh cached answer, SQLite, and a server without a pool
answer where they are, as `keys_active` always did. The answer itself is keys_active's."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.state import _ACTIVE_KEY_TTL_S, ServerState
from shipyard import clock
from tests.helpers import run_async


class _Pool:
    def __init__(self) -> None:
        self.calls = 0

    async def run(self, fn, *args):
        self.calls += 1
        return fn(*args)


def _state(gate, pool, cached_age: float | None, active: bool) -> ServerState:
    state = object.__new__(ServerState)  # only what key_active reads
    state.store = SimpleNamespace(gate=gate)
    state.handlers = pool
    state._active = {} if cached_age is None else {"k": (active, clock.monotonic() - cached_age, None)}
    state.keys_active = lambda key: active  # type: ignore[method-assign]
    return state


@pytest.mark.parametrize("database, with_pool, cached_age, active, on_pool", [
    # database     pool   cached age (s)              answer  looked up on the pool
    ("postgresql", True, None, True, True),            # never looked up: off the loop
    ("postgresql", True, _ACTIVE_KEY_TTL_S + 1, True, True),  # stale: off the loop
    ("postgresql", True, _ACTIVE_KEY_TTL_S + 1, False, True),  # a revoked key says so from there too
    ("postgresql", True, 0.5, True, False),            # fresh: the cache answers at once
    ("postgresql", False, None, True, False),          # no pool (handlers inline): where it is
    ("sqlite", True, None, True, False),               # SQLite: one local read, as before
    ("sqlite", True, _ACTIVE_KEY_TTL_S + 1, False, False),
])
def test_key_lookup_runs_off_the_loop_only_when_it_would_wait_on_postgresql(database, with_pool, cached_age,
                                                                             active, on_pool):
    pool = _Pool() if with_pool else None
    state = _state(object() if database == "sqlite" else None, pool, cached_age, active)
    assert run_async(lambda: state.key_active("k")) is active
    assert (pool is not None and pool.calls == 1) is on_pool
