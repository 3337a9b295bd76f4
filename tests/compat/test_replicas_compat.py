"""A representative slice of the compat tests against two replicas on one PostgreSQL behind nginx:
the real clearml SDK records a run (hyperparameters, scalars, console, an artifact uploaded to one
replica's files listener and read back through the other), and a Shipyard daemon pulls a task
through nginx and runs it. The whole compat set runs this way nightly (test_replicas_nightly.py).
"""
from __future__ import annotations

import pytest

from tests import replicas
from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.compat.test_sdk import (  # noqa: F401 - collected here again, against the replicas
    test_artifact_uploaded_and_downloadable,
    test_console_log,
    test_hyperparams,
    test_scalars,
    test_task_init_records_the_run,
    trained,
)

pytestmark = [pytest.mark.compat,
              pytest.mark.skipif(not replicas.available(), reason="needs PostgreSQL and nginx (scripts/test.sh)")]


@pytest.fixture()
def cluster(replica_cluster):
    return replica_cluster


@pytest.fixture(scope="module")
def server(replica_cluster):
    return replica_cluster.front


@pytest.fixture(scope="module")
def api(server):
    return server.api()


def test_a_daemon_pulls_work_through_nginx(cluster, api, tmp_path):
    daemon = start_daemon(agent_env(cluster.front, tmp_path / "agent"), ["via-nginx"], tmp_path / "daemon.log")
    try:
        tasks = [create_task(api, f"via-nginx-{i}", {"repository": "", "entry_point": "hello.py",
                                                     "diff": f"print('hello from run {i}')\n"}, queue="via-nginx")
                 for i in range(2)]
        docs = [wait_status(api, task, timeout=180) for task in tasks]
    finally:
        daemon.stop()
    for i, (task, doc) in enumerate(zip(tasks, docs, strict=True)):
        assert doc["status"] == "completed", (doc.get("status_reason"), daemon.output()[-3000:])
        assert f"hello from run {i}" in "\n".join(task_log(api, task))
