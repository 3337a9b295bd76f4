"""The Kubernetes engine against an in-memory API holding the client's own models (tests/k8s_fake.py).

No cluster runs here: what these prove is the engine's side of the contract (the manifests it
sends, the states it reads back, the calls it makes); tests/glue/test_k8s_manifests.py validates the
manifests against the Kubernetes schemas.
"""
from __future__ import annotations

import pytest

pytest.importorskip("kubernetes")

from kubernetes.client.exceptions import ApiException  # noqa: E402

from agent.glue.engine import EngineUnavailable, JobRejected, JobRequest, Phase  # noqa: E402
from agent.glue.k8s import KubernetesEngine  # noqa: E402
from agent.glue.k8s_pod import PodSettings, load_template, pod_overrides, quantity, to_manifest  # noqa: E402
from shipyard.errors import ConfigError  # noqa: E402
from tests.k8s_fake import FakeKubernetes  # noqa: E402

JOB = "shipyard-t1"


def request(task_id: str = "t1", **kw) -> JobRequest:
    return JobRequest(task_id=task_id, queue="gpu", command=("shipyard", "execute", "--id", task_id), **kw)


def engine(api: FakeKubernetes, **settings) -> KubernetesEngine:
    settings.setdefault("image", "shipyard:0.1")
    return KubernetesEngine("ml", PodSettings(**settings), batch_api=api.batch, core_api=api.core)


def only_status(eng: KubernetesEngine):
    (status,) = eng.statuses()
    return status


@pytest.fixture
def api() -> FakeKubernetes:
    return FakeKubernetes()


# --- state mapping: one row per thing a cluster does to a job ---------------------------------------------

def _unschedulable(api):
    api.start_pod(JOB, conditions=[api.condition("PodScheduled", "False", "Unschedulable",
                                                 "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")])


def _creating(api):
    api.start_pod(JOB)
    api.pod_state(JOB, waiting=api.waiting("ContainerCreating"))


def _running(api):
    api.start_pod(JOB, phase="Running")


def _node_unknown(api):
    api.start_pod(JOB, phase="Unknown")


def _succeeded(api):
    api.start_pod(JOB, phase="Succeeded")
    api.pod_state(JOB, terminated=api.terminated(0, "Completed"))
    api.job_condition(JOB, "Complete")


def _exit_code(api):
    api.start_pod(JOB, phase="Failed")
    api.pod_state(JOB, terminated=api.terminated(3, "Error"))
    api.job_condition(JOB, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")


def _oom(api):
    api.start_pod(JOB, phase="Failed")
    api.pod_state(JOB, terminated=api.terminated(137, "OOMKilled"))
    api.job_condition(JOB, "Failed", "BackoffLimitExceeded")


def _deadline(api):
    api.start_pod(JOB, phase="Failed", reason="DeadlineExceeded", message="Pod was active on the node longer than "
                  "the specified deadline")
    api.pod_state(JOB, terminated=api.terminated(137, "Error"))
    api.job_condition(JOB, "Failed", "BackoffLimitExceeded")


def _job_deadline(api):
    api.start_pod(JOB, phase="Running")
    api.job_condition(JOB, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline")


def _evicted(api):
    api.start_pod(JOB, phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    api.job_condition(JOB, "Failed", "BackoffLimitExceeded")


def _preempted(api):
    api.start_pod(JOB, phase="Failed", conditions=[api.condition(
        "DisruptionTarget", "True", "PreemptionByScheduler", "preempted by a higher-priority pod")])
    api.pod_state(JOB, terminated=api.terminated(143, "Error"))


def _node_lost(api):
    api.start_pod(JOB, phase="Failed", reason="NodeLost", message="Node gpu-7 which was running pod is unresponsive")


def _pod_gone(api):
    api.job_condition(JOB, "Failed", "BackoffLimitExceeded")


def _image_task(api):
    api.start_pod(JOB)
    api.pod_state(JOB, waiting=api.waiting("ImagePullBackOff", 'Back-off pulling image "nope:1"'))


CASES = [
    ("no pod yet", None, Phase.PENDING, "waiting for the job's pod"),
    ("unschedulable", _unschedulable, Phase.PENDING, "Unschedulable: 0/3 nodes are available: 3 Insufficient"),
    ("container creating", _creating, Phase.PENDING, "ContainerCreating"),
    ("running", _running, Phase.RUNNING, ""),
    ("node unreachable", _node_unknown, Phase.RUNNING, "node unreachable"),
    ("succeeded", _succeeded, Phase.SUCCEEDED, ""),
    ("non-zero exit", _exit_code, Phase.FAILED, "Error"),
    ("OOMKilled", _oom, Phase.FAILED, "OOMKilled"),
    ("pod deadline", _deadline, Phase.FAILED, "DeadlineExceeded"),
    ("job deadline", _job_deadline, Phase.FAILED, "DeadlineExceeded"),
    ("evicted", _evicted, Phase.INFRA, "Evicted: The node was low on resource: memory."),
    ("preempted", _preempted, Phase.INFRA, "PreemptionByScheduler"),
    ("node lost", _node_lost, Phase.INFRA, "NodeLost"),
    ("pod gone", _pod_gone, Phase.INFRA, "pod lost: BackoffLimitExceeded"),
]


@pytest.mark.parametrize(("what", "act", "phase", "reason"), CASES, ids=[c[0] for c in CASES])
def test_state_mapping(api, what, act, phase, reason):
    eng = engine(api)
    assert eng.submit(request(time_limit_s=3600)) == JOB
    if act is not None:
        act(api)
    status = only_status(eng)
    assert (status.job_id, status.task_id, status.phase) == (JOB, "t1", phase), status
    assert status.reason.startswith(reason) if reason else status.reason == "", status.reason
    assert status.exit_code == {"OOMKilled": 137, "non-zero exit": 3, "succeeded": 0}.get(what)
    if what == "running":
        assert api.jobs[("ml", JOB)].spec.template.spec.active_deadline_seconds == 3600


@pytest.mark.parametrize(("image", "phase"), [("registry.example.com/nope:1", Phase.FAILED), (None, Phase.INFRA)])
def test_an_image_that_cannot_be_pulled_ends_the_job(api, image, phase):
    """The task's own image: its fault (FAILED). The template's: the operator's (INFRA, requeue). Either way
    the job is deleted, since kubelet would retry the pull for ever holding the pod's GPUs."""
    eng = engine(api)
    eng.submit(request(image=image, gpus=1))
    _image_task(api)
    status = only_status(eng)
    assert status.phase is phase
    assert status.reason.startswith(f"ImagePullBackOff: image {image or 'shipyard:0.1'} cannot be pulled: Back-off")
    assert ("job", JOB, 0, "Background") in api.deletes
    assert eng.statuses() == []


def test_abort_deletes_the_pod_with_the_grace_then_the_job(api):
    eng = engine(api)
    eng.submit(request())
    _running(api)
    pod = api.pod_of(JOB).metadata.name
    eng.cancel(JOB, 12.7)
    assert api.deletes == [("pod", pod, 12, None), ("job", JOB, 12, "Foreground")]
    assert only_status(eng).phase is Phase.CANCELLED
    api.finish_deletions()
    assert eng.statuses() == []
    eng.cancel(JOB, 5)  # already gone: nothing to do, no error


def test_a_restarted_engine_finds_its_jobs_by_label_and_only_its_own(api):
    first = engine(api)
    first.submit(request("t1"))
    first.submit(request("t2", attempt=2))
    engine(api, glue="other").submit(request("t3"))
    _running(api)
    again = engine(api)
    found = {(s.task_id, s.job_id, s.phase) for s in again.statuses()}
    assert found == {("t1", JOB, Phase.RUNNING), ("t2", "shipyard-t2-2", Phase.PENDING)}


def test_the_job_variables_live_in_a_secret_the_job_owns(api):
    """The task's key never sits in the Job's spec (readable with `view`); the Secret goes with the Job."""
    eng = engine(api)
    env = {"CLEARML_API_HOST": "http://srv:8008", "CLEARML_API_ACCESS_KEY": "TASKKEY1",
           "CLEARML_API_SECRET_KEY": "s3cret"}
    eng.submit(request(env=env, attempt=3, options=("-e", "CLEARML_API_HOST=http://elsewhere")))
    name = "shipyard-t1-3"
    job = to_manifest(api.jobs[("ml", name)])
    assert "s3cret" not in repr(job) and "elsewhere" not in repr(job)
    assert api.secrets[("ml", name)].string_data == env
    (status,) = eng.statuses()
    assert (status.attempt, status.key) == (3, "TASKKEY1")
    eng.cancel(name, 0)
    api.finish_deletions()
    assert api.secrets == {} and api.jobs == {}


def test_a_secret_that_cannot_be_made_takes_its_job_with_it(api):
    eng = engine(api)
    original = api.batch.create_namespaced_job

    def create_then_break(*args, **kw):
        out = original(*args, **kw)
        api.fail_next = ApiException(status=503, reason="Service Unavailable")
        return out

    api.batch.create_namespaced_job = create_then_break
    with pytest.raises(EngineUnavailable, match="create secret"):
        eng.submit(request(env={"A": "1"}))
    assert api.jobs == {}


def test_a_resubmit_after_a_restart_adds_the_missing_secret(api):
    """The glue died between the Job and its Secret: the same attempt's submit finds the Job and completes it."""
    eng = engine(api)
    eng.submit(request(env={"A": "1"}))
    api.secrets.clear()
    assert eng.submit(request(env={"A": "1"})) == JOB
    assert api.secrets[("ml", JOB)].metadata.owner_references[0].uid == api.jobs[("ml", JOB)].metadata.uid


def test_submit_is_idempotent_per_attempt(api):
    eng = engine(api)
    assert eng.submit(request()) == eng.submit(request()) == JOB
    assert eng.submit(request(attempt=2)) == "shipyard-t1-2"
    assert len(api.jobs) == 2


@pytest.mark.parametrize(("status", "error", "words"), [
    (503, EngineUnavailable, "503"),
    (403, EngineUnavailable, "check the glue's Role"),
    (429, EngineUnavailable, "429"),
    (422, JobRejected, "kubernetes refused the job"),
])
def test_api_errors_in_the_glue_words(api, status, error, words):
    eng = engine(api)
    api.fail_next = ApiException(status=status, reason="nope")
    with pytest.raises(error, match=words):
        eng.submit(request())


def test_an_unreachable_api_server_is_engine_unavailable(api):
    eng = engine(api)
    api.down = True
    for call in (lambda: eng.submit(request()), eng.statuses, lambda: eng.cancel(JOB, 1)):
        with pytest.raises(EngineUnavailable, match="unreachable"):
            call()


# --- the manifest: template merging ---------------------------------------------------------------------

TEMPLATE = """
apiVersion: v1
kind: Pod
metadata:
  labels: {team: vision}
spec:
  serviceAccountName: shipyard-task
  nodeSelector: {cloud.google.com/gke-accelerator: nvidia-tesla-a100}
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  volumes:
    - name: cache
      persistentVolumeClaim: {claimName: shipyard-cache}
  containers:
    - name: sidecar
      image: busybox:1
    - name: task
      image: registry.example.com/shipyard:0.1
      env: [{name: SHIPYARD_CACHE_DIR, value: /cache}]
      resources:
        limits: {cpu: "4", memory: 16Gi}
      volumeMounts: [{name: cache, mountPath: /cache}]
"""


def test_the_template_is_merged_with_the_task(api, tmp_path):
    path = tmp_path / "pod.yaml"
    path.write_text(TEMPLATE)
    eng = engine(api, template=load_template(path), image=None)
    eng.submit(request(gpus=2, cpus=8, time_limit_s=90.5, env={"CLEARML_API_HOST": "http://srv:8008"},
                       options=("--shm-size", "1.5g", "-e", "SEED=1")))
    job = to_manifest(api.jobs[("ml", JOB)])
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert (spec["backoffLimit"], pod["activeDeadlineSeconds"], pod["restartPolicy"]) == (0, 91, "Never")
    assert "activeDeadlineSeconds" not in spec  # pending for a GPU does not use up the run time
    assert pod["serviceAccountName"] == "shipyard-task"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    sidecar, task = pod["containers"]
    assert sidecar == {"name": "sidecar", "image": "busybox:1"}
    assert task["image"] == "registry.example.com/shipyard:0.1"
    assert task["command"] == ["shipyard", "execute", "--id", "t1"]
    assert task["resources"]["limits"] == {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert task["resources"]["requests"] == {"cpu": "8", "nvidia.com/gpu": "2"}
    assert {e["name"]: e["value"] for e in task["env"]} == {"SHIPYARD_CACHE_DIR": "/cache", "SEED": "1"}
    assert task["envFrom"] == [{"secretRef": {"name": JOB}}]
    assert {m["mountPath"] for m in task["volumeMounts"]} == {"/cache", "/dev/shm"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1536Mi"}} in pod["volumes"]
    labels = spec["template"]["metadata"]["labels"]
    assert labels["team"] == "vision" and labels["shipyard.io/task-id"] == "t1"
    assert job["metadata"]["annotations"] == {"shipyard.io/image-source": "template"}


def test_a_pod_without_gpus_sees_none(api):
    engine(api).submit(request())
    (task,) = api.jobs[("ml", JOB)].spec.template.spec.containers
    assert {e.name: e.value for e in task.env} == {"NVIDIA_VISIBLE_DEVICES": "void"}


@pytest.mark.parametrize(("text", "words"), [
    ("spec:\n  nodeSelecter: {a: b}\n", "spec.nodeSelecter is not a field"),
    ("spec:\n  containers: [{name: task, imagePullPolicy: Always, resources: {limitz: {cpu: '1'}}}]\n",
     r"spec.containers\[0\].resources.limitz"),
    ("kind: Deployment\nspec: {}\n", "expected a Pod"),
    ("- a\n", "expected a Pod manifest"),
])
def test_a_bad_template_is_refused_naming_the_field(tmp_path, text, words):
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_template(path)


def test_no_image_anywhere_fails_the_task_naming_the_settings(api):
    eng = engine(api, image=None)
    with pytest.raises(JobRejected, match="names no container image .*--image"):
        eng.check(request())
    eng.check(request(image="mine:1"))
    engine(api, image=None, template={"spec": {"containers": [{"name": "task", "image": "t:1"}]}}).check(request())


# --- the allow-list ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "allowed", "words"), [
    (("--privileged",), None, "--privileged has no Kubernetes pod equivalent"),
    (("-v", "/:/host"), None, "-v has no Kubernetes pod equivalent"),
    (("--network=host",), None, "--network has no Kubernetes pod equivalent"),
    (("--cpus", "2"), None, "--cpus is not allowed .*--allow-option"),
    (("--user=0",), None, "--user is not allowed"),
    (("--user", "root"), {"--user"}, "numeric UID"),
    (("--shm-size", "lots"), None, "expected a size"),
    (("--env",), None, "--env needs a value"),
    (("-e", "NOVALUE"), None, "expected NAME=VALUE"),
])
def test_the_allow_list_refuses_naming_the_argument(api, options, allowed, words):
    settings = {"allowed_options": frozenset(allowed)} if allowed else {}
    eng = engine(api, **settings)
    with pytest.raises(JobRejected, match=words):
        eng.check(request(options=options))
    with pytest.raises(JobRejected):
        eng.submit(request(options=options))
    assert api.jobs == {}


def test_the_tasks_docker_arguments_are_checked_like_engine_options(api):
    eng = engine(api)
    with pytest.raises(JobRejected, match="--ipc has no Kubernetes pod equivalent"):
        eng.check(request(docker_args=("--ipc=host",)))
    eng.submit(request(docker_args=("-e", "FROM_DOCKER=1"), options=("-e", "FROM_OPTIONS=2")))
    (task,) = api.jobs[("ml", JOB)].spec.template.spec.containers
    assert {"FROM_DOCKER", "FROM_OPTIONS"} <= {e.name for e in task.env}


def test_opted_in_arguments_map_onto_the_pod():
    got = pod_overrides(["--cpus=1.5", "-m 4g", "--user", "1000:1000", "-w", "/src"],
                        {"--cpus", "--memory", "--user", "--workdir"})
    assert (got.cpus, got.memory, got.run_as, got.workdir) == ("1500m", "4Gi", (1000, 1000), "/src")
    assert [quantity(s, "x") for s in ("64m", "1024", "2G", "512k")] == ["64Mi", "1024", "2Gi", "512Ki"]


@pytest.mark.parametrize(("kw", "settings", "words"), [
    ({"gpus": 9}, {"max_gpus": 8}, "asks for 9 GPUs; the largest node .* has 8"),
    ({"image": "evil/miner"}, {"image_prefixes": ("registry.example.com/",)}, "evil/miner is not allowed"),
    ({"image": "any:1"}, {"allow_task_image": False}, "--no-task-image"),
])
def test_requests_that_can_never_run_are_rejected(api, kw, settings, words):
    with pytest.raises(JobRejected, match=words):
        engine(api, **settings).check(request(**kw))


def test_a_task_id_that_cannot_name_a_job_is_rejected(api):
    with pytest.raises(JobRejected, match="cannot name a Kubernetes Job"):
        engine(api).check(request("Bad_ID"))


# --- credentials and a real client against a closed port ---------------------------------------------------

def _kubeconfig(path, port: int) -> str:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t0ken}}}}]
contexts: [{{name: ctx, context: {{cluster: c, user: u, namespace: ml}}}}]
current-context: ctx
""")
    return str(path)


def test_the_real_client_on_an_unreachable_api_server_is_engine_unavailable(tmp_path, monkeypatch):
    """kubeconfig -> the official client -> connection refused: tasks stay queued (the loop retries)."""
    from tests.helpers import free_ports

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (port,) = free_ports(1)
    eng = KubernetesEngine.connect("ml", PodSettings(image="img:1"), kubeconfig=_kubeconfig(tmp_path / "kc", port))
    for call in (eng.statuses, lambda: eng.submit(request()), lambda: eng.cancel(JOB, 1)):
        with pytest.raises(EngineUnavailable, match="unreachable"):
            call()


def test_no_credentials_anywhere_is_a_config_error_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"no Kubernetes credentials: .*{missing}"):
        KubernetesEngine.connect("ml", PodSettings(image="img:1"), kubeconfig=str(missing))
