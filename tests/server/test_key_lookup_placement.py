"""Where a token's key-activity look-up runs (server/state.py `ServerState.key_active`): on
PostgreSQL a look-up the cache cannot answer goes to the handler pool, so the event loop never
waits through its round trips; a fresh cached answer, SQLite, and a server without a pool
answer where they are, as `keys_active` always did. The answer itself is keys_active's. A web
page's session cookie is checked the same way (server/web/session.py)."""
from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import httpx
import pytest
from starlette.requests import Request

from server.auth.keys import Identity, KeyStore, TokenSigner
from server.files.store import build_files_app
from server.rpc.api import ApiApp
from server.rpc.offload import HandlerPool
from server.services import load_all
from server.state import _ACTIVE_KEY_TTL_S, _STALE_KEY_TTL_S, ServerState
from server.storage.store import Store
from server.web import session
from server.web.pages import build_web_app
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
    state._refreshing = {}
    state.keys_active = lambda key: active  # type: ignore[method-assign]
    return state


@pytest.mark.parametrize("database, with_pool, cached_age, active, on_pool", [
    # database     pool   cached age (s)              answer  looked up on the pool
    ("postgresql", True, None, True, True),            # never looked up: off the loop
    ("postgresql", True, _STALE_KEY_TTL_S + 1, True, True),   # too old to use: off the loop
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


def test_an_active_keys_answer_past_its_ttl_is_used_once_more_while_it_is_looked_up_again():
    """PostgreSQL: the call is answered from the cache at once, the look-up runs in the
    background (one at a time), and from then on the key's current state holds: here, revoked."""
    pool = _Pool()
    state = _state(None, pool, _ACTIVE_KEY_TTL_S + 1, True)
    looked_up = []

    def active_until(key):
        looked_up.append(key)
        return False, None  # revoked meanwhile (on another replica)

    state.keys = SimpleNamespace(active_until=active_until)
    del state.keys_active  # the real one: the cache, then the key store

    async def scenario():
        first = await state.key_active("k")
        second = await state.key_active("k")  # before the look-up ran: one look-up, not two
        for _ in range(5):
            await asyncio.sleep(0)
        return first, second, await state.key_active("k")

    assert run_async(scenario) == (True, True, False)
    assert looked_up == ["k"] and pool.calls == 1 and not state._refreshing


# --- the web session cookie (server/web/session.py), on a real store -------------------------


@pytest.fixture()
def served(database_url, tmp_path):
    """A ServerState on a real store with a handler pool, and a token of a key it holds."""
    load_all()  # the API's endpoints (their registry)
    store = Store(database_url)
    keys = KeyStore(store)
    state = ServerState(store=store, data_dir=tmp_path, signer=TokenSigner("s" * 32), keys=keys,
                        handlers=HandlerPool(2))
    access, _ = keys.create()
    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    yield backend, state, state.signer.issue(Identity(user=access, user_name=access))
    state.handlers.close(grace_s=2)
    store.close()


def _cookie_request(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": b"",
                    "headers": [(b"cookie", f"{session.COOKIE}={token}".encode())]})


def test_session_cookie_key_lookup_runs_off_the_loop_on_postgresql(served):
    """A web page's session check is the API's key check: on PostgreSQL the look-up the cache
    cannot answer (the first, and each after `_ACTIVE_KEY_TTL_S`) runs on the handler pool, not
    on the event loop thread; on SQLite it stays a local read on the loop, as before."""
    database, state, token = served
    looked_up_on: list[int] = []
    active_until = state.keys.active_until

    def recording(access_key: str):
        looked_up_on.append(threading.get_ident())
        return active_until(access_key)

    state.keys.active_until = recording  # type: ignore[method-assign]

    async def check() -> tuple[bool, int]:
        identity = await session.session_identity(state, _cookie_request(token))
        return identity is not None, threading.get_ident()

    signed_in, loop_thread = run_async(check)
    assert signed_in and len(looked_up_on) == 1
    assert (looked_up_on[0] != loop_thread) is (database == "postgresql")



def test_key_lookup_after_the_pool_closed_answers_503_not_500(served):
    """Shutdown closes the handler pool; a request that still comes needing a key look-up from
    it (on PostgreSQL: the token check, the web session check) is answered with the retryable
    503 in the ClearML envelope, as is any other call for the pool, not a 500 with a traceback.
    A sign-in still answers: its row read and hash run on the key store's own threads."""
    database, state, token = served
    access, secret = state.keys.create()
    state.handlers.close(grace_s=2)
    bearer = {"authorization": f"Bearer {token}"}

    async def calls() -> dict[str, tuple[int, int]]:
        answers = {}
        api = httpx.AsyncClient(transport=httpx.ASGITransport(app=ApiApp(state)), base_url="http://api")
        web = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_web_app(state)), base_url="http://web",
                                cookies={session.COOKIE: token})
        files = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_files_app(state)), base_url="http://files")
        async with api, web, files:
            reply = await api.post("/users.get_current_user", headers=bearer)
            answers["token"] = reply.status_code, reply.json()["meta"]["result_code"]
            reply = await web.post("/api/users.get_current_user", headers={"X-Shipyard-Web": "1"})
            answers["web api"] = reply.status_code, reply.json()["meta"]["result_code"]
            reply = await web.get("/session")
            answers["web page"] = reply.status_code, reply.json().get("code", 200)
            reply = await files.get("/some/file", headers=bearer)
            answers["files"] = reply.status_code, reply.json().get("code", 200)
            reply = await api.post("/auth.login", auth=(access, secret))
            answers["sign-in"] = reply.status_code, reply.json()["meta"]["result_code"]
            state.keys_active(state.signer.verify(token).user)  # cached: the call itself goes to the pool
            reply = await api.post("/tasks.get_all", headers=bearer, json={})
            answers["pooled call"] = reply.status_code, reply.json()["meta"]["result_code"]
        return answers

    on_pg = database == "postgresql"  # SQLite: the look-up is a local read on the loop, it answers
    looked_up = 503 if on_pg else 200
    assert run_async(calls) == {"token": (looked_up, looked_up), "web api": (looked_up, looked_up),
                                "web page": (looked_up, looked_up), "files": (503, 503) if on_pg else (404, 404),
                                "sign-in": (200, 200), "pooled call": (503, 503)}


def test_a_listening_replica_looks_the_keys_in_use_up_again_together(tmp_path):
    """PostgreSQL with the coordinator listening: every key change arrives as a notification, and
    the keys in use are looked up again in one statement a minute (`sweep_keys`), so a change made
    by hand in SQL is seen within that, and no call pays for a look-up of its own."""
    from sqlalchemy import update

    from server.storage import tables as t

    store = Store(f"sqlite:///{tmp_path / 'keys.db'}")
    keys = KeyStore(store)
    kept, revoked, unused = (keys.create(name=n)[0] for n in ("kept", "revoked", "unused"))
    state = object.__new__(ServerState)
    state.keys = keys
    state.coordinator = SimpleNamespace(connected=True)
    long_ago = clock.monotonic() - 100
    state._active = {k: (True, long_ago, None) for k in (kept, revoked, unused)}
    state._used = {kept, revoked}
    with store.tx() as conn:  # by hand: no notification
        conn.execute(update(t.credentials).where(t.credentials.c.access_key == revoked).values(revoked=True))
    assert state.sweep_keys() == 2
    assert state._active[kept][0] is True and state._active[kept][1] > long_ago
    assert state._active[revoked][0] is False
    assert state._active[unused] == (True, long_ago, None)  # not in use since the last sweep: left to its TTL
    assert state._used == set() and state.sweep_keys() == 0
    state.coordinator = SimpleNamespace(connected=False)  # not listening: answers last 5 s, no sweep
    state._used = {kept}
    assert state.sweep_keys() == 0
    keys.close()
    store.close()
