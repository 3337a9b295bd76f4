"""An in-memory Kubernetes API for the glue's tests: the client's own models in, the same models out.

    api = FakeKubernetes()
    engine = KubernetesEngine("ml", settings, batch_api=api.batch, core_api=api.core)
    api.start_pod("shipyard-t1", phase="Running")        # what the Job controller + kubelet would do
    api.pod_state("shipyard-t1", terminated=api.terminated(137, "OOMKilled"))

`batch` and `core` stand in for kubernetes.client.BatchV1Api and CoreV1Api with the methods the
engine calls, same names and arguments; each stored object is a copy made through the client's own
serializer (sanitize_for_serialization, then deserialize), so a manifest the client could not send
fails here too. Every call is recorded as its RBAC triple (api group, resource, verb) in `calls`,
which the RBAC test compares with deploy/kubernetes/glue.yaml. `down = True` makes every call fail
the way an unreachable API server does; `fail_next` raises one ApiException.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from agent.glue.k8s_pod import from_manifest, to_manifest

RBAC = {
    "create_namespaced_job": ("batch", "jobs", "create"),
    "list_namespaced_job": ("batch", "jobs", "list"),
    "delete_namespaced_job": ("batch", "jobs", "delete"),
    "list_namespaced_pod": ("", "pods", "list"),
    "delete_namespaced_pod": ("", "pods", "delete"),
    "create_namespaced_secret": ("", "secrets", "create"),
}
"""What each client method of the fake needs from the API server's authorizer."""


def copy_model(model: Any, kind: str) -> Any:
    return from_manifest(to_manifest(model), kind)


def _matches(labels: dict[str, str] | None, selector: str | None) -> bool:
    wanted = [part.split("=", 1) for part in (selector or "").split(",") if part]
    return all((labels or {}).get(key) == value for key, value in wanted)


class FakeKubernetes:
    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], Any] = {}
        self.pods: dict[tuple[str, str], Any] = {}
        self.secrets: dict[tuple[str, str], Any] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.deletes: list[tuple[str, str, int | None, str | None]] = []
        self.down = False
        self.fail_next: ApiException | None = None
        self._ids = itertools.count(1)
        self.batch = _Api(self)
        self.core = self.batch

    def call(self, method: str) -> None:
        self.calls.append(RBAC[method])
        if self.down:
            raise MaxRetryError(None, "/apis/batch/v1", "connection refused")  # type: ignore[arg-type]
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    # --- what the Job controller and the kubelet would do ---------------------------------------
    def start_pod(self, job_name: str, namespace: str = "ml", *, phase: str = "Pending", **status: Any) -> Any:
        job = self.jobs[(namespace, job_name)]
        template = copy_model(job.spec.template, "V1PodTemplateSpec")
        name = f"{job_name}-{next(self._ids):05d}"
        meta = template.metadata
        meta.name, meta.namespace = name, namespace
        meta.creation_timestamp = dt.datetime.now(dt.timezone.utc)
        meta.owner_references = [client.V1OwnerReference(api_version="batch/v1", kind="Job", name=job_name,
                                                         uid=job.metadata.uid, controller=True)]
        pod = client.V1Pod(api_version="v1", kind="Pod", metadata=meta, spec=template.spec,
                           status=client.V1PodStatus(phase=phase, **status))
        self.pods[(namespace, name)] = pod
        return pod

    def pod_of(self, job_name: str, namespace: str = "ml") -> Any:
        return [p for p in self.pods.values() if p.metadata.owner_references[0].name == job_name][-1]

    def pod_state(self, job_name: str, *, phase: str | None = None, waiting: Any = None, terminated: Any = None,
                  **status: Any) -> None:
        pod = self.pod_of(job_name)
        if phase:
            pod.status.phase = phase
        for key, value in status.items():
            setattr(pod.status, key, value)
        if waiting is not None or terminated is not None:
            state = client.V1ContainerState(waiting=waiting, terminated=terminated)
            name = pod.spec.containers[0].name
            pod.status.container_statuses = [client.V1ContainerStatus(
                name=name, image=pod.spec.containers[0].image, image_id="", ready=False, restart_count=0,
                state=state)]

    def job_condition(self, job_name: str, type_: str, reason: str = "", message: str = "",
                      namespace: str = "ml") -> None:
        job = self.jobs[(namespace, job_name)]
        job.status.conditions = [*(job.status.conditions or []), client.V1JobCondition(
            type=type_, status="True", reason=reason or None, message=message or None)]
        if type_ == "Complete":
            job.status.succeeded = 1
        if type_ == "Failed":
            job.status.failed = 1

    def finish_deletions(self) -> None:
        """The garbage collector: a job deleted in the foreground goes once its pods are gone."""
        for key, job in list(self.jobs.items()):
            if job.metadata.deletion_timestamp is not None:
                del self.jobs[key]

    @staticmethod
    def waiting(reason: str, message: str = "") -> Any:
        return client.V1ContainerStateWaiting(reason=reason, message=message or None)

    @staticmethod
    def terminated(exit_code: int, reason: str = "") -> Any:
        return client.V1ContainerStateTerminated(exit_code=exit_code, reason=reason or None)

    @staticmethod
    def condition(type_: str, status: str, reason: str = "", message: str = "") -> Any:
        return client.V1PodCondition(type=type_, status=status, reason=reason or None, message=message or None)


class _Raw:
    """What the client returns with _preload_content=False: the HTTP response, its JSON in `.data`."""

    def __init__(self, data: bytes):
        self.data = data


def _answer(model: Any, options: dict[str, Any]) -> Any:
    if options.get("_preload_content") is False:
        return _Raw(json.dumps(to_manifest(model)).encode())
    return model


class _Api:
    """BatchV1Api and CoreV1Api in one: the methods the engine calls, with their real names."""

    def __init__(self, store: FakeKubernetes):
        self._s = store

    def create_namespaced_job(self, namespace: str, body: Any, **_: Any) -> Any:
        self._s.call("create_namespaced_job")
        assert isinstance(body, client.V1Job), f"the engine must send a V1Job, not {type(body).__name__}"
        key = (namespace, body.metadata.name)
        if key in self._s.jobs:
            raise ApiException(status=409, reason="Conflict")
        job = copy_model(body, "V1Job")
        job.metadata.namespace, job.metadata.uid = namespace, f"uid-{next(self._s._ids)}"
        job.metadata.creation_timestamp = dt.datetime.now(dt.timezone.utc)
        job.status = client.V1JobStatus()
        self._s.jobs[key] = job
        return _answer(job, _)

    def list_namespaced_job(self, namespace: str, label_selector: str | None = None, field_selector: str | None = None,
                            **_: Any) -> Any:
        self._s.call("list_namespaced_job")
        name = (field_selector or "").removeprefix("metadata.name=")
        items = [copy_model(j, "V1Job") for (ns, n), j in self._s.jobs.items()
                 if ns == namespace and _matches(j.metadata.labels, label_selector) and (not name or n == name)]
        return _answer(client.V1JobList(items=items), _)

    def delete_namespaced_job(self, name: str, namespace: str, grace_period_seconds: int | None = None,
                              propagation_policy: str | None = None, **_: Any) -> Any:
        self._s.call("delete_namespaced_job")
        self._s.deletes.append(("job", name, grace_period_seconds, propagation_policy))
        job = self._s.jobs.get((namespace, name))
        if job is None:
            raise ApiException(status=404, reason="Not Found")
        for store in (self._s.pods, self._s.secrets):  # the garbage collector follows owner references
            for key in [k for k, o in store.items() if o.metadata.owner_references[0].name == name]:
                del store[key]
        if propagation_policy == "Foreground":
            job.metadata.deletion_timestamp = dt.datetime.now(dt.timezone.utc)
        else:
            del self._s.jobs[(namespace, name)]
        return client.V1Status(status="Success")

    def list_namespaced_pod(self, namespace: str, label_selector: str | None = None, **_: Any) -> Any:
        self._s.call("list_namespaced_pod")
        items = [copy_model(p, "V1Pod") for (ns, _n), p in self._s.pods.items()
                 if ns == namespace and _matches(p.metadata.labels, label_selector)]
        return _answer(client.V1PodList(items=items), _)

    def delete_namespaced_pod(self, name: str, namespace: str, grace_period_seconds: int | None = None,
                              **_: Any) -> Any:
        self._s.call("delete_namespaced_pod")
        self._s.deletes.append(("pod", name, grace_period_seconds, None))
        if self._s.pods.pop((namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")
        return copy_model(client.V1Pod(metadata=client.V1ObjectMeta(name=name)), "V1Pod")

    def create_namespaced_secret(self, namespace: str, body: Any, **_: Any) -> Any:
        self._s.call("create_namespaced_secret")
        assert isinstance(body, client.V1Secret), f"the engine must send a V1Secret, not {type(body).__name__}"
        key = (namespace, body.metadata.name)
        if key in self._s.secrets:
            raise ApiException(status=409, reason="Conflict")
        (owner,) = body.metadata.owner_references
        assert owner.uid == self._s.jobs[(namespace, owner.name)].metadata.uid, "the secret's owner is its job"
        self._s.secrets[key] = copy_model(body, "V1Secret")
        return _answer(body, _)
