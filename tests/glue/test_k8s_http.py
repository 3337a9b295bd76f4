"""The engine through the real `kubernetes` client over HTTP, against a small API server on loopback.

tests/k8s_fake.py stands in for the client's API objects; this keeps the client whole (its URL
building, query parameters, JSON serialization and deserialization, error bodies) against
tests/k8s_apiserver.py, which answers like the API server does for the paths the engine uses.
Its requests, read as the authorizer reads them, are a second, independent check of the Role.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("kubernetes")
yaml = pytest.importorskip("yaml")

from agent.glue.engine import EngineUnavailable, JobRejected, JobRequest, Phase  # noqa: E402
from agent.glue.k8s import KubernetesEngine  # noqa: E402
from agent.glue.k8s_pod import PodSettings  # noqa: E402
from tests.helpers import free_ports  # noqa: E402
from tests.k8s_apiserver import ApiServer, write_kubeconfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
@pytest.fixture
def api(tmp_path, monkeypatch) -> Iterator[tuple[ApiServer, KubernetesEngine]]:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (port,) = free_ports(1)
    server = ApiServer(port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", port)
    engine = KubernetesEngine.connect("ml", PodSettings(image="shipyard:0.1"), kubeconfig=kubeconfig)
    try:
        yield server, engine
    finally:
        server.shutdown()
        server.server_close()


def pod_for(job: dict, **status) -> dict:
    """The pod the Job controller would make, as the API server's JSON."""
    template = job["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": job["metadata"]["name"] + "-x7k2p", "namespace": "ml",
                         "creationTimestamp": "2026-12-06T21:00:00Z",
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "controller": True,
                                              "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}]},
            "spec": template["spec"], "status": status}


REQUEST = JobRequest(task_id="f" * 32, queue="gpu", command=("shipyard", "execute", "--id", "f" * 32), gpus=1,
                     env={"CLEARML_API_HOST": "http://srv:8008", "CLEARML_API_ACCESS_KEY": "AK"}, attempt=1)
NAME = f"shipyard-{'f' * 32}-1"


def test_a_task_over_http_from_submit_to_oom_to_abort(api):
    server, engine = api
    assert engine.submit(REQUEST) == NAME
    assert engine.submit(REQUEST) == NAME                     # 409: found by name, secret already there
    job = server.objects["/apis/batch/v1/namespaces/ml/jobs"][NAME]
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    secret = server.objects["/api/v1/namespaces/ml/secrets"][NAME]
    assert secret["stringData"]["CLEARML_API_HOST"] == "http://srv:8008"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    server.objects["/api/v1/namespaces/ml/pods"][NAME + "-x7k2p"] = pod_for(job, phase="Failed", containerStatuses=[{
        "name": "task", "image": "shipyard:0.1", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}])
    (status,) = engine.statuses()
    assert (status.job_id, status.task_id, status.phase, status.reason, status.exit_code, status.attempt,
            status.key) == (NAME, "f" * 32, Phase.FAILED, "OOMKilled", 137, 1, "AK")
    lists = {(p, q.get("labelSelector"), q.get("fieldSelector")) for m, p, q in server.requests if m == "GET"}
    assert lists == {("/apis/batch/v1/namespaces/ml/jobs", None, f"metadata.name={NAME}"),   # the 409's job
                     ("/apis/batch/v1/namespaces/ml/jobs", "shipyard.io/glue=shipyard", None),
                     ("/api/v1/namespaces/ml/pods", "shipyard.io/glue=shipyard", None)}
    engine.cancel(NAME, 7)
    deletes = [(p.rsplit("/", 1)[1], q) for m, p, q in server.requests if m == "DELETE"]
    assert [d[0] for d in deletes] == [NAME + "-x7k2p", NAME]
    assert str(deletes[0][1]["gracePeriodSeconds"]) == "7"
    assert deletes[1][1]["propagationPolicy"] == "Foreground"


def test_what_the_client_sends_is_what_the_role_grants(api):
    """Every HTTP request the engine makes, as the authorizer sees it, against deploy/kubernetes/glue.yaml."""
    server, engine = api
    engine.submit(REQUEST)
    engine.submit(REQUEST)
    job = server.objects["/apis/batch/v1/namespaces/ml/jobs"][NAME]
    server.objects["/api/v1/namespaces/ml/pods"][NAME + "-x7k2p"] = pod_for(job, phase="Running")
    engine.statuses()
    engine.cancel(NAME, 1)
    role = next(d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/glue.yaml").read_text())
                if d and d["kind"] == "Role")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert server.rbac() == granted


@pytest.mark.parametrize(("status", "message", "error", "words"), [
    (403, 'jobs.batch is forbidden: User "system:serviceaccount:ml:glue" cannot create resource "jobs"',
     EngineUnavailable, "403 jobs.batch is forbidden.*check the glue's Role"),
    (403, 'jobs.batch "x" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1',
     EngineUnavailable, "exceeded quota"),
    (422, 'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value',
     JobRejected, "kubernetes refused the job .*: Job.batch \"x\" is invalid"),
    (500, "etcdserver: request timed out", EngineUnavailable, "500 etcdserver"),
])
def test_the_api_servers_own_message_reaches_the_task(api, status, message, error, words):
    server, engine = api
    server.answer = (status, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                              "message": message})
    with pytest.raises(error, match=words):
        engine.submit(REQUEST)
