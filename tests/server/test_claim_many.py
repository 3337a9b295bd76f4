"""`count` on queues.get_next_task (Shipyard's `claim_many`): several claims in one call.

Up to `count` entries popped in one transaction, each leased, in the queues' priority order, answered
as {"claims": [...]} as soon as one is there; no entry is given twice to concurrent claimers; a bad
count is a 400 naming the field; without `count` the answer is the reference one.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shipyard.protocol import CLAIM_COUNT, CLAIMS, MAX_CLAIM_COUNT
from tests.helpers import Api, ApiFailure, queue_with


def _claim(api, queues: list[str], count: int, **fields) -> list[dict]:
    body = {"queue": queues[0], "queues": queues, "lease_s": 60, "worker": "batcher", CLAIM_COUNT: count, **fields}
    return api.call("queues.get_next_task", body)[CLAIMS]


def test_several_claims_in_one_call_each_with_its_lease(api):
    queue, tasks = queue_with(api, "many", 5)
    first = _claim(api, [queue], 3, with_task=True)
    assert [c["entry"]["task"] for c in first] == tasks[:3]
    assert all(c["queue"] == queue and c["lease"]["attempt"] == 1 and c["task"]["id"] == c["entry"]["task"]
               for c in first)
    rest = _claim(api, [queue], 5)
    assert [c["entry"]["task"] for c in rest] == tasks[3:]
    assert _claim(api, [queue], 2) == []                     # nothing left: an empty list, not {}
    for claim in first + rest:                                # each claim holds a lease of its own
        api.call("tasks.renew_lease", {"task": claim["entry"]["task"], "attempt": claim["lease"]["attempt"],
                                       "lease_s": 60})
        api.call("tasks.started", {"task": claim["entry"]["task"], "attempt": claim["lease"]["attempt"]})
    assert api.call("queues.get_num_entries", {"queue": queue})["num"] == 0


def test_batch_follows_the_queues_priority_order(api):
    high, highs = queue_with(api, "many-high", 2)
    low, lows = queue_with(api, "many-low", 2)
    got = _claim(api, [high, low], 3)
    assert [(c["entry"]["task"], c["queue"]) for c in got] == [(highs[0], high), (highs[1], high), (lows[0], low)]


def test_without_count_the_answer_is_the_reference_one(api):
    queue, (a, b) = queue_with(api, "many-shape", 2)
    single = api.call("queues.get_next_task", {"queue": queue})
    assert set(single) == {"entry"} and single["entry"]["task"] == a
    leased = api.call("queues.get_next_task", {"queue": queue, "lease_s": 30, "worker": "w"})
    assert set(leased) == {"entry", "lease"} and leased["entry"]["task"] == b
    assert api.call("queues.get_next_task", {"queue": queue}) == {}
    assert "claim_many" in api.call("server.info")["shipyard"]["extensions"]


@pytest.mark.parametrize("bad", [0, -1, MAX_CLAIM_COUNT + 1, "many", 1.5])
def test_a_bad_count_is_refused_naming_the_field(api, bad):
    queue = api.call("queues.create", {"name": f"many-bad-{time.monotonic_ns()}"})["id"]
    with pytest.raises(ApiFailure) as refused:
        api.call("queues.get_next_task", {"queue": queue, CLAIM_COUNT: bad})
    assert refused.value.code == 400 and f"'{CLAIM_COUNT}'" in str(refused.value)


def test_concurrent_batch_claimers_never_share_an_entry(server, api):
    queue, tasks = queue_with(api, "many-race", 60)
    got: list[str] = []
    lock = threading.Lock()

    def claimer(client: Api) -> None:
        while batch := _claim(client, [queue], 7):
            with lock:
                got.extend(c["entry"]["task"] for c in batch)

    with ThreadPoolExecutor(3) as pool:
        for done in [pool.submit(claimer, Api(server.api_url)) for _ in range(3)]:
            done.result()
    assert sorted(got) == sorted(tasks) and len(got) == len(set(got))


def test_a_batch_long_poll_answers_as_soon_as_one_entry_is_there(server, api):
    queue = api.call("queues.create", {"name": "many-wait"})["id"]
    task = api.call("tasks.create", {"name": "many-wait", "type": "training"})["id"]
    answer: dict = {}

    def waiter() -> None:
        started = time.monotonic()
        answer["claims"] = _claim(Api(server.api_url), [queue], 10, wait_s=20)
        answer["waited"] = time.monotonic() - started

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    thread.join(20)
    assert [c["entry"]["task"] for c in answer["claims"]] == [task]
    assert answer["waited"] < 10
