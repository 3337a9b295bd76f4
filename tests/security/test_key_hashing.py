"""Stored secrets: a person's secret is stretched (PBKDF2), a generated one is hashed once.

Minting a run's key happens on every claim, so it must not cost a PBKDF2 hash on the server;
a generated secret has 288 random bits, so stretching would add nothing. A wrong secret of a
generated key still costs what an unknown key costs, so timing says nothing about which keys
exist (attack 8).
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from server import errors
from server.auth.keys import KeyStore, is_stretched, verify_secret
from server.storage.store import Store


@pytest.fixture()
def keys(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'keys.db'}")
    yield KeyStore(store)
    store.close()


def _verify(keys: KeyStore, access: str, secret: str):
    """verify_off_loop on a thread of its own (a Playwright session keeps a loop running here)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, keys.verify_off_loop(access, secret)).result()


def _stored(keys: KeyStore, access: str) -> str:
    return keys._row(access).secret_hash


def test_generated_secret_is_hashed_once_and_a_chosen_one_stretched(keys):
    gen_access, gen_secret = keys.create(role="task", expires=time.time() + 60)
    chosen_access, chosen_secret = keys.create("CHOSENKEY00000000000000", "a person's secret")
    assert not is_stretched(_stored(keys, gen_access))
    assert is_stretched(_stored(keys, chosen_access))
    assert verify_secret(gen_secret, _stored(keys, gen_access))
    assert not verify_secret(gen_secret + "x", _stored(keys, gen_access))
    assert _verify(keys, chosen_access, chosen_secret).role == "admin"
    assert _verify(keys, gen_access, gen_secret).role == "task"


def test_minting_costs_no_stretching(keys):
    started = time.perf_counter()
    for _ in range(20):
        keys.create(role="task", expires=time.time() + 60)
    per_key = (time.perf_counter() - started) / 20
    print(f"mint: {per_key * 1000:.1f} ms per key")
    assert per_key < 0.02  # a PBKDF2 hash alone is ~30 ms here


def _failure_time(keys: KeyStore, access: str) -> float:
    started = time.perf_counter()
    with pytest.raises(errors.APIError) as caught:
        _verify(keys, access, "wrong secret")
    assert caught.value.code == 401
    return time.perf_counter() - started


def test_wrong_secret_of_a_generated_key_costs_what_an_unknown_key_costs(keys):
    gen_access, _ = keys.create(role="task", expires=time.time() + 60)
    _failure_time(keys, "NOSUCHKEY00000000000000")  # the dummy hash is made on first use
    wrong = min(_failure_time(keys, gen_access) for _ in range(3))
    unknown = min(_failure_time(keys, "NOSUCHKEY00000000000000") for _ in range(3))
    print(f"wrong secret {wrong * 1000:.1f} ms, unknown key {unknown * 1000:.1f} ms")
    assert wrong > unknown / 3


def test_a_closed_key_store_stops_its_hashing_threads_and_answers_503(keys):
    access, secret = keys.create("CLOSINGKEY0000000000000", "a person's secret")
    assert _verify(keys, access, secret).role == "admin"  # the hashing threads are up
    threads = list(keys._executor._threads)
    keys.close()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    with pytest.raises(errors.APIError) as caught:
        _verify(keys, access, secret + "x")  # not remembered: it would need a hash
    assert caught.value.code == 503 and "shutting down" in caught.value.msg
