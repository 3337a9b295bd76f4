"""The fair pop on PostgreSQL: the window's JSON paths, and concurrent pops each get a task once."""
from __future__ import annotations

import threading

import pytest

from tests import pg
from tests.helpers import ACCESS_KEY, Api, start_server

pytestmark = pytest.mark.skipif(not pg.available(), reason="PostgreSQL binaries not installed (.ci/run installs them)")


def _on_postgres(cluster, tmp_path, database: str, scenario) -> None:
    """`scenario(server)` against a Shipyard server with quotas on, on a database of its own."""
    srv = start_server(tmp_path / "srv", db=cluster.new_database(database),
                       env={"SHIPYARD_QUOTAS": f"{ACCESS_KEY}=1", "SHIPYARD_PREEMPTION": "off"})
    try:
        scenario(srv)
    finally:
        srv.stop()


def test_concurrent_fair_pops_on_postgres(pg_cluster, tmp_path):
    _on_postgres(pg_cluster, tmp_path, "fair", _pop_all)


def _pop_all(srv) -> None:
    api = srv.api()
    queue = api.call("queues.create", {"name": "pg-fair"})["id"]
    tasks = []
    for i in range(30):
        params = {"Shipyard": {"gpus": {"section": "Shipyard", "name": "gpus", "value": "3"}}} if i == 0 else {}
        tid = api.call("tasks.create", {"name": f"c{i}", "type": "training", "hyperparams": params})["id"]
        api.call("tasks.enqueue", {"task": tid, "queue": queue})
        tasks.append(tid)
    got, lock = [], threading.Lock()

    def worker(n: int) -> None:
        client = Api(srv.api_url)
        while data := client.call("queues.get_next_task", {"queue": queue, "lease_s": 600, "worker": f"w{n}"}):
            with lock:
                got.append(data["entry"]["task"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(tasks)
    rows = {r["entity"]: r for r in api.call("quotas.get_all")["quotas"]}
    assert rows[f"user:{ACCESS_KEY}"]["running_gpus"] == 29 + 3   # the first task asked for 3 GPUs


def test_concurrent_batch_claims_on_postgres(pg_cluster, tmp_path):
    """`count` on PostgreSQL with the fair pop: concurrent batch claimers each get a task once."""
    _on_postgres(pg_cluster, tmp_path, "batch", _batch_pop_all)


def _batch_pop_all(srv) -> None:
    api = srv.api()
    queue = api.call("queues.create", {"name": "pg-batch"})["id"]
    tasks = []
    for i in range(24):
        tasks.append(api.call("tasks.create", {"name": f"b{i}", "type": "training"})["id"])
        api.call("tasks.enqueue", {"task": tasks[-1], "queue": queue})
    got, lock = [], threading.Lock()

    def worker(n: int) -> None:
        client = Api(srv.api_url)
        body = {"queue": queue, "lease_s": 600, "worker": f"w{n}", "count": 3}
        while claims := client.call("queues.get_next_task", body)["claims"]:
            with lock:
                got.extend(c["entry"]["task"] for c in claims)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(tasks) and len(got) == len(set(got))
