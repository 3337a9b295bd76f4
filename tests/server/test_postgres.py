"""The same server on PostgreSQL: a configuration switch, nothing else."""
from __future__ import annotations

import threading

import pytest

from tests import pg
from tests.helpers import Api, start_server

pytestmark = pytest.mark.skipif(not pg.available(), reason="PostgreSQL binaries not installed (.ci/run installs them)")


@pytest.fixture(scope="module")
def pg_server(pg_cluster, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("pgsrv"), db=pg_cluster.new_database("shipyard_test"))
    yield srv
    srv.stop()


def test_task_lifecycle_on_postgres(pg_server):
    api = pg_server.api()
    project = api.call("projects.create", {"name": "pg"})["id"]
    task = api.call("tasks.create", {"name": "on-pg", "type": "training", "project": project,
                                     "script": {"repository": "r"}})["id"]
    api.call("tasks.edit", {"task": task, "script": {"branch": "main"}})
    api.call("tasks.enqueue", {"task": task, "queue_name": "pgq"})
    queue = api.call("tasks.get_by_id", {"task": task})["task"]["execution"]["queue"]
    assert api.call("queues.get_next_task", {"queue": queue})["entry"]["task"] == task
    api.call("tasks.started", {"task": task})
    api.call("tasks.completed", {"task": task})
    doc = api.call("tasks.get_by_id", {"task": task})["task"]
    assert doc["status"] == "completed" and doc["script"] == {"repository": "r", "branch": "main"}
    rows = api.call("tasks.get_all", {"project": [project], "name": "^on-", "only_fields": ["status"]})["tasks"]
    assert rows == [{"id": task, "status": "completed"}]


def test_concurrent_pop_on_postgres(pg_server):
    api = pg_server.api()
    queue = api.call("queues.create", {"name": "pg-concurrent"})["id"]
    tasks = []
    for i in range(60):
        tid = api.call("tasks.create", {"name": f"c{i}", "type": "training"})["id"]
        api.call("tasks.enqueue", {"task": tid, "queue": queue})
        tasks.append(tid)
    got, lock = [], threading.Lock()

    def worker():
        client = Api(pg_server.api_url)
        while data := client.call("queues.get_next_task", {"queue": queue}):
            with lock:
                got.append(data["entry"]["task"])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(tasks)


def test_concurrent_enqueues_and_pops_lose_nothing(pg_server):
    """Light calls and pops run on the handler pool on PostgreSQL, so they overlap: six clients
    each create and enqueue tasks and pop the shared queue. Every pop finds an entry (each
    follows its client's own enqueue of a new task), none fails (a deadlock on the queue's
    metrics row reruns the call), and every task is handed out exactly once."""
    setup = pg_server.api()
    queue = setup.call("queues.create", {"name": "concurrent-pairs"})["id"]
    apis = [Api(pg_server.api_url) for _ in range(6)]  # signed in one by one (the sign-in brake)
    created: list[str] = []
    popped: list[str] = []
    errors: list[BaseException] = []

    def client(api: Api, n: int) -> None:
        try:
            for i in range(12):
                task = api.call("tasks.create", {"name": f"c{n}-{i}", "type": "training"})["id"]
                created.append(task)
                api.call("tasks.enqueue", {"task": task, "queue": queue})
                popped.append(api.call("queues.get_next_task", {"queue": queue})["entry"]["task"])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(api, n)) for n, api in enumerate(apis)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(popped) == 72 and sorted(popped) == sorted(created)
    assert setup.call("queues.get_num_entries", {"queue": queue})["num"] == 0
