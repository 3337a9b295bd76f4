"""Queues: ordering, moves, atomic pop under concurrency, long-poll."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import Api, ApiFailure, queue_with


def _order(api, queue):
    return [e["task"] for e in api.call("queues.get_by_id", {"queue": queue})["queue"]["entries"]]


def test_fifo_and_moves(api):
    queue, (a, b, c) = queue_with(api, "moves", 3)
    assert _order(api, queue) == [a, b, c]
    assert api.call("queues.move_task_to_front", {"queue": queue, "task": c})["position"] == 0
    assert _order(api, queue) == [c, a, b]
    api.call("queues.move_task_backward", {"queue": queue, "task": c, "count": 1})
    assert _order(api, queue) == [a, c, b]
    api.call("queues.move_task_to_back", {"queue": queue, "task": a})
    assert _order(api, queue) == [c, b, a]
    api.call("queues.move_task_forward", {"queue": queue, "task": a})
    assert _order(api, queue) == [c, a, b]
    assert api.call("queues.get_num_entries", {"queue": queue})["num"] == 3
    assert api.call("queues.remove_task", {"queue": queue, "task": a, "update_task_status": True})["removed"] == 1
    assert api.call("tasks.get_by_id", {"task": a})["task"]["status"] == "created"
    assert api.call("queues.get_next_task", {"queue": queue})["entry"]["task"] == c
    assert api.call("queues.get_next_task", {"queue": queue})["entry"]["task"] == b
    assert api.call("queues.get_next_task", {"queue": queue}) == {}


def test_concurrent_pops_get_each_task_once(server, api):
    queue, tasks = queue_with(api, "concurrent", 200)
    got: list[str] = []
    lock = threading.Lock()

    # Sign in one by one first: 16 sign-ins at once with one key meet the sign-in brake (an attempt
    # counts while its secret is hashed; docs/security.md), which is not what this test is about.
    clients = [Api(server.api_url) for _ in range(16)]

    def worker(client: Api) -> None:
        while True:
            data = client.call("queues.get_next_task", {"queue": queue})
            if not data:
                return
            with lock:
                got.append(data["entry"]["task"])

    with ThreadPoolExecutor(16) as pool:
        for f in [pool.submit(worker, client) for client in clients]:
            f.result()
    assert sorted(got) == sorted(tasks) and len(got) == len(set(got))


def test_long_poll_returns_on_enqueue(server, api):
    queue = api.call("queues.create", {"name": "longpoll"})["id"]
    task = api.call("tasks.create", {"name": "lp", "type": "training"})["id"]
    result = {}

    def waiter() -> None:
        started = time.monotonic()
        result["data"] = Api(server.api_url).call("queues.get_next_task", {"queue": queue, "wait_s": 20})
        result["waited"] = time.monotonic() - started

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    thread.join(20)
    assert result["data"]["entry"]["task"] == task
    assert result["waited"] < 10  # woke up on the enqueue, not at the 20 s deadline


def test_long_poll_caller_that_left_takes_nothing(server, api):
    """A waiter whose connection closed must not pop the task it will never receive."""
    queue = api.call("queues.create", {"name": "longpoll-gone"})["id"]
    task = api.call("tasks.create", {"name": "lp-gone", "type": "training"})["id"]
    body = json.dumps({"queue": queue, "wait_s": 20}).encode()
    with socket.create_connection(("127.0.0.1", server.ports[0])) as sock:
        sock.sendall(b"POST /queues.get_next_task HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Authorization: Bearer {api.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)  # the server is now waiting for an entry
    time.sleep(0.3)
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    time.sleep(0.5)
    assert api.call("queues.get_next_task", {"queue": queue})["entry"]["task"] == task


def test_long_poll_times_out_empty(api):
    queue = api.call("queues.create", {"name": "longpoll-empty"})["id"]
    started = time.monotonic()
    assert api.call("queues.get_next_task", {"queue": queue, "wait_s": 1}) == {}
    assert 0.9 < time.monotonic() - started < 5


def test_multi_queue_priority(api):
    high, (h1,) = queue_with(api, "prio-high", 1)
    low, (l1,) = queue_with(api, "prio-low", 1)
    data = api.call("queues.get_next_task", {"queues": [high, low]})
    assert data["entry"]["task"] == h1 and data["queue"] == high
    data = api.call("queues.get_next_task", {"queues": [high, low]})
    assert data["entry"]["task"] == l1 and data["queue"] == low


def test_queue_errors(api):
    api.call("queues.create", {"name": "dup"})
    with pytest.raises(ApiFailure):
        api.call("queues.create", {"name": "dup"})
    queue, _ = queue_with(api, "nonempty", 1)
    with pytest.raises(ApiFailure):
        api.call("queues.delete", {"queue": queue})
    api.call("queues.delete", {"queue": queue, "force": True})


def test_a_claim_can_carry_the_tasks_document(api):
    """`with_task` (Shipyard's): the popped task's document, as tasks.get_by_id gives it, saves a
    claimer (the cluster glue) one round trip per task; without it the answer is as before."""
    queue, (a, b) = queue_with(api, "with-task", 2)
    got = api.call("queues.get_next_task", {"queue": queue, "with_task": True, "lease_s": 30, "worker": "w1"})
    assert got["entry"]["task"] == a and got["task"]["id"] == a
    assert got["task"] == api.call("tasks.get_by_id", {"task": a})["task"]
    assert "task" not in api.call("queues.get_next_task", {"queue": queue})
    with pytest.raises(ApiFailure) as bad:
        api.call("queues.get_next_task", {"queue": queue, "with_task": "yes please"})
    assert bad.value.code == 400 and "with_task" in str(bad.value)
