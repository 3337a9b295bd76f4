"""`GlueLoop` with the Kubernetes engine on the in-memory API: the loop's side of Kubernetes' states.

Queue -> Job (with the task's key in its Secret) -> pod states -> the task's life: the scheduler's
message as the status message, OOMKilled and DeadlineExceeded ending the task with their reasons,
an eviction requeued as the next attempt's Job, abort deleting the pod with the grace, a bad Docker
argument failing at once, and a restarted glue adopting its jobs by label.
Skipped where the shared loop (agent/glue/loop.py) is not there.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest.importorskip("kubernetes")
loop_module = pytest.importorskip("agent.glue.loop")

from agent.execution.taskkey import TaskKeys  # noqa: E402
from agent.glue.k8s import KubernetesEngine  # noqa: E402
from agent.glue.k8s_pod import PodSettings  # noqa: E402
from agent.glue.request import GlueSettings, QueueSpec  # noqa: E402
from agent.taskserver.memory import InMemoryTaskServer  # noqa: E402
from tests import helpers  # noqa: E402
from tests.k8s_fake import FakeKubernetes  # noqa: E402


@pytest.fixture
def server() -> InMemoryTaskServer:
    api = InMemoryTaskServer()
    api.call("queues.create", {"name": "gpu"})
    return api


@pytest.fixture
def cluster() -> FakeKubernetes:
    return FakeKubernetes()


def enqueue(api: InMemoryTaskServer, **hyper) -> str:
    section = {k: {"section": "Shipyard", "name": k, "value": str(v)} for k, v in hyper.items()}
    task = api.call("tasks.create", {"name": "t", "type": "training", "hyperparams": {"Shipyard": section}})["id"]
    queue = api.call("queues.get_all", {"name": "^gpu$"})["queues"][0]["id"]
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    return task


@contextmanager
def glue(api: InMemoryTaskServer, cluster: FakeKubernetes) -> Iterator[None]:
    engine = KubernetesEngine("ml", PodSettings(image="shipyard:0.1"), batch_api=cluster.batch,
                              core_api=cluster.core)
    settings = GlueSettings(queues=(QueueSpec("gpu", gpus=1),), worker="glue:k8s", max_jobs=10, watch_s=0.02,
                            retry_s=0.05, lease_s=30.0, grace_s=2.0)
    stop = threading.Event()
    loop = loop_module.GlueLoop(api, engine, settings, stop=stop, task_keys=TaskKeys(api, ("glue-key", "s")),
                                server_env={"CLEARML_API_HOST": "http://srv:8008"})
    thread = threading.Thread(target=loop.work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def until(check, timeout_s: float = 10.0):
    return helpers.until(check, timeout_s)


def job_of(cluster: FakeKubernetes, task: str, attempt: int = 1) -> str:
    name = f"shipyard-{task}-{attempt}"
    until(lambda: ("ml", name) in cluster.jobs)
    return name


def test_a_task_becomes_a_job_and_the_schedulers_message_shows(server, cluster):
    task = enqueue(server)
    with glue(server, cluster):
        job = job_of(cluster, task)
        secret = until(lambda: cluster.secrets.get(("ml", job))).string_data  # made just after its Job
        assert secret["CLEARML_API_HOST"] == "http://srv:8008" and secret["CLEARML_API_SECRET_KEY"]
        cluster.start_pod(job, conditions=[cluster.condition("PodScheduled", "False", "Unschedulable",
                                                             "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")])
        until(lambda: "Insufficient nvidia.com/gpu" in server.tasks[task]["status_message"])
    assert server.tasks[task]["status_message"].startswith(f"pending in kubernetes job {job}: Unschedulable")


@pytest.mark.parametrize(("act", "words"), [
    (lambda c, j: (c.pod_state(j, phase="Failed", terminated=c.terminated(137, "OOMKilled")),
                   c.job_condition(j, "Failed", "BackoffLimitExceeded")), "OOMKilled"),
    (lambda c, j: (c.pod_state(j, phase="Failed", reason="DeadlineExceeded"),
                   c.job_condition(j, "Failed", "BackoffLimitExceeded")), "DeadlineExceeded"),
])
def test_a_pod_that_dies_before_its_task_reports_ends_the_task(server, cluster, act, words):
    task = enqueue(server)
    with glue(server, cluster):
        job = job_of(cluster, task)
        cluster.start_pod(job, phase="Running")
        until(lambda: server.tasks[task]["status"] == "in_progress")
        act(cluster, job)
        until(lambda: server.tasks[task]["status"] == "failed")
    assert words in server.tasks[task]["status_reason"]


def test_an_evicted_pod_is_requeued_as_the_next_attempt(server, cluster):
    task = enqueue(server)
    with glue(server, cluster):
        job = job_of(cluster, task)
        cluster.start_pod(job, phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
        cluster.job_condition(job, "Failed", "BackoffLimitExceeded")
        job_of(cluster, task, attempt=2)


def test_abort_deletes_the_pod_with_the_grace(server, cluster):
    task = enqueue(server)
    with glue(server, cluster):
        job = job_of(cluster, task)
        cluster.start_pod(job, phase="Running")
        until(lambda: "kubernetes" in server.tasks[task]["status_message"])  # "submitting to" / "pending in"

        def stop_asked_and_job_deleted() -> bool:
            # Asked again while not yet seen: a status message the loop writes in the same instant
            # ("pending in ...") overwrites the stop request; that race is the loop's, not the engine's.
            if "stop" not in server.tasks[task]["status_message"]:
                server.call("tasks.stop", {"task": task})
            return ("job", job, 2, "Foreground") in cluster.deletes

        until(stop_asked_and_job_deleted)


def test_a_docker_argument_without_a_pod_equivalent_fails_the_task_at_once(server, cluster):
    bad = enqueue(server, engine_options="--privileged")
    good = enqueue(server)
    with glue(server, cluster):
        until(lambda: server.tasks[bad]["status"] == "failed")
        job_of(cluster, good)
    assert "--privileged has no Kubernetes pod equivalent" in server.tasks[bad]["status_reason"]
    assert all(j.metadata.labels["shipyard.io/task-id"] != bad for j in cluster.jobs.values())


def test_a_restarted_glue_adopts_its_jobs(server, cluster):
    task = enqueue(server)
    with glue(server, cluster):
        job = job_of(cluster, task)
        cluster.start_pod(job, phase="Running")
        until(lambda: server.tasks[task]["status"] == "in_progress")
    with glue(server, cluster):
        cluster.pod_state(job, phase="Failed", terminated=cluster.terminated(137, "OOMKilled"))
        cluster.job_condition(job, "Failed", "BackoffLimitExceeded")
        until(lambda: server.tasks[task]["status"] == "failed")
    assert len(cluster.jobs) == 1
