"""Two replicas on one PostgreSQL behind nginx behave as one server (docs/replicas.md).

Wake-ups cross replicas through LISTEN/NOTIFY, exactly one replica leads (runs the lease reaper)
and a killed leader is replaced, tokens and web sessions from one replica are good on the other,
and clients going through nginx ride out a replica killed mid-request or mid-long-poll and a
PostgreSQL restart (a retryable 503, never a wrong answer).
"""
from __future__ import annotations

import signal
import threading
import time

import pytest
import requests

from shipyard.client.api import ApiClient
from tests import replicas
from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, ApiFailure

pytestmark = pytest.mark.skipif(not replicas.available(), reason="needs PostgreSQL and nginx (scripts/test.sh)")


@pytest.fixture()
def cluster(replica_cluster):
    return replica_cluster


def _front(cluster) -> ApiClient:
    """A client through nginx that retries as agents and the CLI do (502/503, refused connections)."""
    return ApiClient(cluster.front.api_url, ACCESS_KEY, SECRET_KEY, "test-client", timeout=30)


def _queue_with_tasks(api, name: str, count: int) -> tuple[str, list[str]]:
    queue = api.call("queues.create", {"name": name})["id"]
    tasks = [api.call("tasks.create", {"name": f"{name}-{i}", "type": "training"})["id"] for i in range(count)]
    for task in tasks:
        api.call("tasks.enqueue", {"task": task, "queue": queue})
    return queue, tasks


def _wait_for(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _long_poll_in_thread(api, queue: str, wait_s: float) -> tuple[threading.Thread, dict]:
    got: dict = {}

    def poll() -> None:
        try:
            got["data"] = api.call("queues.get_next_task", {"queue": queue, "wait_s": wait_s})
        except Exception as exc:  # noqa: BLE001 - reported by the test
            got["error"] = exc
        got["at"] = time.monotonic()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return thread, got


def test_enqueue_on_one_replica_wakes_a_long_poll_on_the_other(cluster):
    a, b = cluster.replicas[0].api(), cluster.replicas[1].api()
    _wait_for(lambda: cluster.metrics(1).get("shipyard_replica_listener_up") == 1, what="B's listener")
    queue, _ = _queue_with_tasks(a, "wake", 0)
    _enqueue_on_a_wakes_b(cluster, a, b, queue)


def _enqueue_on_a_wakes_b(cluster, a, b, queue: str) -> None:
    """A long-poll waiting on B gets the task enqueued on A, woken by the notification (the
    safety re-check while the listener is up is 30 s away)."""
    task = a.call("tasks.create", {"name": "wake-me", "type": "training"})["id"]
    thread, got = _long_poll_in_thread(b, queue, 30)
    _wait_for(lambda: cluster.metrics(1).get("shipyard_long_polls_waiting", 0) >= 1, what="the long-poll on B")
    enqueued = time.monotonic()
    a.call("tasks.enqueue", {"task": task, "queue": queue})
    thread.join(30)
    assert got["data"]["entry"]["task"] == task
    assert got["at"] - enqueued < 2.5


def test_a_queue_known_empty_is_polled_without_the_database_and_still_wakes(cluster):
    """An idle agent's re-poll of a queue its replica found empty asks the database nothing
    (server/notify.py); an enqueue on the other replica still wakes it, and the queue's deletion
    there ends it with the invalid-queue error."""
    a, b = cluster.replicas[0].api(), cluster.replicas[1].api()
    _wait_for(lambda: cluster.metrics(1).get("shipyard_replica_listener_up") == 1, what="B's listener")
    queue, _ = _queue_with_tasks(a, "known-empty", 0)
    assert b.call("queues.get_next_task", {"queue": queue}) == {}  # a pop: found empty
    skipped = cluster.metrics(1)["shipyard_long_poll_pops_skipped_total"]
    assert b.call("queues.get_next_task", {"queue": queue}) == {}
    assert cluster.metrics(1)["shipyard_long_poll_pops_skipped_total"] == skipped + 1

    _enqueue_on_a_wakes_b(cluster, a, b, queue)

    thread, got = _long_poll_in_thread(b, queue, 30)
    _wait_for(lambda: cluster.metrics(1).get("shipyard_long_polls_waiting", 0) >= 1, what="the long-poll on B")
    deleted = time.monotonic()
    a.call("queues.delete", {"queue": queue})
    thread.join(30)
    assert isinstance(got.get("error"), ApiFailure) and queue in str(got["error"])
    assert got["at"] - deleted < 2.5


def test_exactly_one_leader(cluster):
    leader = cluster.leader()
    assert [cluster.metrics(i)["shipyard_replica_leader"] for i in range(2)].count(1) == 1
    assert leader in (0, 1)


def test_a_token_and_a_web_session_from_one_replica_work_on_the_other(cluster):
    a, b = cluster.replicas
    token = Api(a.api_url).token
    assert Api(b.api_url).call("users.get_current_user", token=token)["user"]["id"] == ACCESS_KEY
    web = requests.Session()
    signed_in = web.post(f"{a.web_url}/login", data={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY},
                         allow_redirects=False, timeout=30)
    assert signed_in.status_code == 303
    assert web.get(f"{b.web_url}/session", timeout=30).json()["user"]


def test_a_key_revoked_on_one_replica_is_refused_on_the_other_at_once(cluster):
    """B caches its key checks for minutes while it hears every replica's key changes; the
    revocation's notification drops B's answer, so the key stops working there at once (before
    that notification, B trusted its answer for 5 s)."""
    a = cluster.replicas[0].api()
    _wait_for(lambda: cluster.metrics(1).get("shipyard_replica_listener_up") == 1, what="B's listener")
    made = a.call("auth.create_credentials", {"role": "user", "label": "leaving"})
    person = Api(cluster.replicas[1].api_url, made["access_key"], made["secret_key"])
    assert person.call("users.get_current_user")["user"]["id"]  # B has checked the key: cached there
    a.call("auth.revoke_credentials", {"access_key": made["access_key"]})
    revoked = time.monotonic()

    def refused() -> bool:
        return person.raw("users.get_current_user").json()["meta"]["result_code"] == 401

    _wait_for(refused, timeout=10, what="the revoked key refused on B")
    assert time.monotonic() - revoked < 2.0


def test_a_killed_leader_is_replaced_and_its_reaper_work_goes_on(cluster):
    api = _front(cluster)
    queue, [task] = _queue_with_tasks(api, "reap", 1)
    claim = api.call("queues.get_next_task", {"queue": queue, "lease_s": 1, "worker": "gone-agent"})
    assert claim["entry"]["task"] == task
    leader = cluster.leader()
    cluster.replicas[leader].stop(signal.SIGKILL)
    survivor = 1 - leader
    try:
        assert cluster.leader(timeout=15) == survivor
        # The survivor's reaper gives the expired lease's task back to the queue.
        _wait_for(lambda: api.call("tasks.get_by_id", {"task": task})["task"]["status"] == "queued",
                  what="the task re-queued by the new leader")
    finally:
        cluster.restart(leader)
    assert cluster.leader() == survivor  # the restarted one does not take over


def _replica_holding_long_poll(cluster) -> int:
    found: list[int] = []

    def holding() -> bool:
        found[:] = [i for i in range(2) if cluster.metrics(i).get("shipyard_long_polls_waiting", 0) >= 1]
        return len(found) == 1

    _wait_for(holding, what="one replica holding the long-poll")
    return found[0]


def test_a_replica_killed_mid_long_poll_the_client_retries_on_the_other(cluster):
    api = _front(cluster)
    queue, _ = _queue_with_tasks(api, "killed-poll", 0)
    task = api.call("tasks.create", {"name": "after-kill", "type": "training"})["id"]
    client = ApiClient(cluster.front.api_url, ACCESS_KEY, SECRET_KEY, "agent-x", timeout=60)
    thread, got = _long_poll_in_thread(client, queue, 20)
    holder = _replica_holding_long_poll(cluster)
    cluster.replicas[holder].stop(signal.SIGKILL)
    try:
        # nginx answers 502 for the killed one; the client retries and lands on the survivor.
        _wait_for(lambda: cluster.metrics(1 - holder).get("shipyard_long_polls_waiting", 0) >= 1,
                  what="the retried long-poll on the survivor")
        api.call("tasks.enqueue", {"task": task, "queue": queue})
        thread.join(30)
        assert "error" not in got, got.get("error")
        assert got["data"]["entry"]["task"] == task
    finally:
        cluster.restart(holder)


def test_a_replica_killed_mid_requests_loses_no_task_and_gives_none_twice(cluster):
    api = _front(cluster)
    queue, tasks = _queue_with_tasks(api, "killed-pops", 40)
    received: list[str] = []
    lock = threading.Lock()

    def agent(n: int) -> None:
        client = ApiClient(cluster.front.api_url, ACCESS_KEY, SECRET_KEY, f"agent-{n}", timeout=30)
        while len(set(received)) < len(tasks):  # a pop answered by the killed one comes back after its lease
            # the lease outlives a slow run on a loaded box; a pop lost with the killed replica
            # comes back once it expires
            data = client.call("queues.get_next_task", {"queue": queue, "lease_s": 12, "wait_s": 2})
            if not data:
                continue
            task = data["entry"]["task"]
            with lock:
                received.append(task)
            time.sleep(0.05)  # "runs" it
            client.call("tasks.started", {"task": task})
            client.call("tasks.completed", {"task": task, "force": True})

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    _wait_for(lambda: len(received) >= 8, what="pops under way")
    cluster.replicas[0].stop(signal.SIGKILL)
    try:
        for thread in threads:
            thread.join(120)
    finally:
        cluster.restart(0)
    assert sorted(set(received)) == sorted(tasks)        # none lost (a pop answered by the dead one is re-queued)
    assert len(received) == len(set(received))            # none given to two agents
    statuses = {t["id"]: t["status"] for t in api.call("tasks.get_all", {"id": tasks, "only_fields": ["status"]})["tasks"]}
    assert set(statuses.values()) == {"completed"}


def test_postgres_restart_gives_503_then_replicas_reconnect(cluster):
    api = cluster.replicas[1].api()
    queue, _ = _queue_with_tasks(api, "pg-restart", 0)
    task = api.call("tasks.create", {"name": "pg-restart", "type": "training"})["id"]
    answers: list[int] = []
    stop = threading.Event()

    def prober() -> None:
        while not stop.is_set():
            try:
                doc = api.call("tasks.get_by_id", {"task": task}, timeout=10)["task"]
                assert doc["id"] == task  # never a wrong answer
                answers.append(200)
            except ApiFailure as exc:
                answers.append(int(exc.code or 0))
            except requests.RequestException:
                answers.append(-1)
            time.sleep(0.05)

    thread = threading.Thread(target=prober, daemon=True)
    thread.start()
    time.sleep(0.3)
    cluster.pg.halt()
    time.sleep(1.5)
    cluster.pg.start()
    _wait_for(lambda: answers[-3:] == [200, 200, 200], timeout=30, what="answers after the restart")
    stop.set()
    thread.join(10)
    assert 503 in answers and set(answers) <= {200, 503}, answers
    # Both replicas' listeners came back: a cross-replica wake-up works again.
    for i in range(2):
        _wait_for(lambda i=i: cluster.metrics(i).get("shipyard_replica_listener_up") == 1, timeout=20,
                  what=f"replica {i}'s listener")
    thread, got = _long_poll_in_thread(api, queue, 20)
    _wait_for(lambda: cluster.metrics(1).get("shipyard_long_polls_waiting", 0) >= 1, what="the long-poll")
    cluster.replicas[0].api().call("tasks.enqueue", {"task": task, "queue": queue})
    thread.join(20)
    assert got["data"]["entry"]["task"] == task


def test_concurrent_writes_on_two_replicas_lose_no_update(cluster):
    """A worker's status report (which touches the task) racing tasks.started on the other replica
    must not write back the task as it was before the start (a lost update)."""
    a, b = cluster.replicas[0].api(), cluster.replicas[1].api()
    queue, tasks = _queue_with_tasks(a, "races", 12)
    for task in tasks:
        claim = a.call("queues.get_next_task", {"queue": queue, "lease_s": 60, "worker": "racer"})
        assert claim["entry"]["task"] == task
        reports = threading.Thread(target=lambda task=task: [
            b.call("workers.status_report", {"worker": "racer", "task": task, "timestamp": int(time.time() * 1000)})
            for _ in range(4)])
        reports.start()
        a.call("tasks.started", {"task": task, "force": True, "attempt": claim["lease"]["attempt"]})
        reports.join(30)
    rows = a.call("tasks.get_all", {"id": tasks, "only_fields": ["status", "last_worker"]})["tasks"]
    assert {(r["status"], r.get("last_worker")) for r in rows} == {("in_progress", "racer")}
