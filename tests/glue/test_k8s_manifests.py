"""Every manifest Shipyard sends or ships, checked against the Kubernetes schemas; RBAC equal to the engine's calls.

kubernetes-validate bundles the API server's OpenAPI schemas per Kubernetes release (offline); we
check in strict mode (an unknown field fails) against the oldest release we claim and the newest
the package knows.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytest.importorskip("kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")

from agent.glue.engine import JobRequest  # noqa: E402
from agent.glue.k8s import KubernetesEngine  # noqa: E402
from agent.glue.k8s_pod import PodSettings, build_job, build_secret, load_template, to_manifest  # noqa: E402
from tests.k8s_fake import RBAC, FakeKubernetes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
ENGINE_SOURCE = ROOT / "agent" / "glue" / "k8s.py"
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def validate(manifest: dict, where: str) -> None:
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is not a valid {manifest.get('kind')} for Kubernetes {version}: "
                        f"{str(exc).splitlines()[0]} at {list(exc.path)}")


def deploy_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                docs.append((f"{path.name}#{i} {doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def find(kind: str, name: str) -> dict:
    return next(doc for _, doc in deploy_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def shipped_template(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("tpl") / "pod.yaml"
    path.write_text(find("ConfigMap", "shipyard-task-template")["data"]["pod.yaml"])
    return load_template(path)


def test_the_deploy_files_are_valid_kubernetes():
    docs = deploy_documents()
    assert {d["kind"] for _, d in docs} >= {"Namespace", "StatefulSet", "Deployment", "Service", "Secret",
                                            "ServiceAccount", "Role", "RoleBinding", "ConfigMap"}
    for where, doc in docs:
        validate(doc, where)


def test_the_shipped_pod_template_is_a_valid_pod(shipped_template):
    pod = {"apiVersion": "v1", "kind": "Pod", **shipped_template}
    pod["metadata"] = {**pod["metadata"], "name": "template"}
    validate(pod, "the ConfigMap's pod.yaml")


REQUESTS = [
    JobRequest(task_id="a" * 32, queue="gpu", command=("shipyard", "execute", "--id", "a" * 32, "--attempt", "2"),
               env={"CLEARML_API_HOST": "http://shipyard:8008", "CLEARML_API_ACCESS_KEY": "K",
                    "CLEARML_API_SECRET_KEY": "S"},
               gpus=4, cpus=16, memory_mb=65536, time_limit_s=7200.2, attempt=2,
               options=("--shm-size=8g", "-e", "NCCL_DEBUG=INFO", "-w", "/src", "--cpus", "2.5", "-m", "1.5g",
                        "--user", "1000:1000")),
    JobRequest(task_id="b1", queue="queue with spaces", command=("shipyard", "execute", "--id", "b1")),
    JobRequest(task_id="c1", queue="cpu", command=("shipyard", "execute", "--id", "c1"),
               image="registry.example.com/ml/torch:2.4"),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=["gpu-everything", "bare", "task-image"])
@pytest.mark.parametrize("with_template", [True, False], ids=["template", "no-template"])
def test_every_generated_manifest_is_valid(request_, with_template, shipped_template):
    settings = PodSettings(template=shipped_template if with_template else {}, image="shipyard:0.1.0",
                           allowed_options=frozenset({"--env", "--workdir", "--shm-size", "--cpus", "--memory",
                                                      "--user"}))
    job = build_job(request_, settings)
    validate(to_manifest(job), f"the Job for {request_.task_id}")
    if request_.env:
        secret = build_secret(request_, settings, job.metadata.name, "0b7a2c4e-0000-4000-8000-000000000000")
        validate(to_manifest(secret), f"the Secret for {request_.task_id}")


# --- RBAC: exactly what the engine calls --------------------------------------------------------------------

def engine_calls() -> set[str]:
    """The client methods the engine's code uses on its two API objects (self._batch.X, self._core.X),
    called there or handed on."""
    calls = set()
    for node in ast.walk(ast.parse(ENGINE_SOURCE.read_text())):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr in ("_batch", "_core")):
            calls.add(node.attr)
    return calls


def exercise_every_call() -> set[tuple[str, str, str]]:
    """Drive the engine through submit (with the secret and the restart path), statuses (with a stuck job),
    and cancel, through the in-memory API that records each call's RBAC triple."""
    api = FakeKubernetes()
    engine = KubernetesEngine("ml", PodSettings(image="img:1"), batch_api=api.batch, core_api=api.core)
    request = JobRequest(task_id="t1", queue="q", command=("x",), env={"A": "1"})
    engine.submit(request)
    engine.submit(request)                 # already there: found by name
    api.start_pod("shipyard-t1", phase="Running")
    engine.statuses()
    engine.cancel("shipyard-t1", 5)
    stuck = JobRequest(task_id="t2", queue="q", command=("x",))
    engine.submit(stuck)
    api.start_pod("shipyard-t2")
    api.pod_state("shipyard-t2", waiting=api.waiting("ErrImagePull"))
    engine.statuses()
    return set(api.calls)


def role_grants() -> set[tuple[str, str, str]]:
    role = find("Role", "shipyard-glue")
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_the_glue_role_grants_exactly_the_calls_the_engine_makes():
    calls = engine_calls()
    unmodelled = calls - RBAC.keys()
    assert not unmodelled, f"the engine calls {sorted(unmodelled)}: add them to tests/k8s_fake.py (and the Role)"
    needed = {RBAC[name] for name in calls}
    assert exercise_every_call() == needed, "the scenario must reach every call the engine's code makes"
    granted = role_grants()
    assert granted - needed == set(), f"deploy/kubernetes/glue.yaml grants more than the engine uses: {granted - needed}"
    assert needed - granted == set(), f"deploy/kubernetes/glue.yaml misses what the engine calls: {needed - granted}"


def test_the_role_is_bound_to_the_glue_and_task_pods_get_no_token():
    binding = find("RoleBinding", "shipyard-glue")
    assert binding["roleRef"]["name"] == "shipyard-glue"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "shipyard-glue", "namespace": "shipyard"}]
    glue = find("Deployment", "shipyard-glue")["spec"]["template"]["spec"]
    assert glue["serviceAccountName"] == "shipyard-glue"
    assert find("ServiceAccount", "shipyard-task")["automountServiceAccountToken"] is False


def test_the_glue_deployment_runs_options_the_cli_has():
    from shipyard.cli.k8s import k8s_cmd

    (container,) = find("Deployment", "shipyard-glue")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "k8s"
    known = {opt for param in k8s_cmd.params for opt in param.opts}
    assert {a for a in args[1:] if a.startswith("--")} <= known
