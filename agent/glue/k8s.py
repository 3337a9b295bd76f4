"""The Kubernetes engine: one batch/v1 Job (one pod, backoffLimit 0) per task.

    KubernetesEngine.connect(namespace, settings)   in-cluster config, else kubeconfig
        check(request)      allow-list, image, GPUs per pod     (k8s_pod.check_request)
        submit(request)     POST the Job from the template       (k8s_pod.build_job), then the Secret
                            of its variables, owned by the Job  (k8s_pod.build_secret)
        statuses()          list Jobs + pods by this glue's label -> JobStatus (k8s_state.job_state)
        cancel(job, grace)  delete the job's pods with the grace, then the Job (Foreground)

The engine keeps no state: its jobs carry the task id, the attempt and the glue's name as labels,
so `statuses()` after a restart sees exactly what it saw before. It makes these API calls and no
others (deploy/kubernetes/glue.yaml's Role grants exactly them; tests/glue/test_k8s_manifests.py holds
the two together):

    batch/v1 jobs   create, list, delete        core/v1 pods   list, delete      core/v1 secrets   create

The job's variables (server address, the task's own short-lived key) live in a Secret named like
the Job and owned by it (the garbage collector removes it with the Job), never in the Job's spec,
which the namespace's `view` role can read.

A submit that finds its Job already there (the glue restarted between POST and the loop noting
it) returns the existing name: submit is idempotent per task attempt. An API server that cannot
be reached, answers 5xx, 429, 401 or 403 raises EngineUnavailable (tasks stay queued and the loop
retries); a 422 (the API server refused the manifest) is the task's JobRejected. The `kubernetes`
client is imported only here and in k8s_pod, lazily, so a daemon without the extra pays nothing.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from agent.glue.engine import EngineUnavailable, JobRejected, JobRequest, JobStatus
from agent.glue.k8s_pod import (
    ANNOTATION_KEY,
    LABEL_ATTEMPT,
    LABEL_GLUE,
    LABEL_TASK,
    PodSettings,
    build_job,
    build_secret,
    check_request,
    from_manifest,
    job_name_for,
)
from agent.glue.k8s_state import is_stuck, job_state
from shipyard.errors import ConfigError

log = logging.getLogger("shipyard.agent.glue.k8s")

REQUEST_TIMEOUT = (10.0, 30.0)
"""(connect, read) seconds for every API call: a dead API server must not stall the loop."""
UNAVAILABLE_STATUSES = frozenset({0, 401, 403, 408, 429})


class KubernetesEngine:
    name = "kubernetes"

    def __init__(self, namespace: str, settings: PodSettings, *, batch_api: Any, core_api: Any):
        self.namespace = namespace
        self.settings = settings
        self._batch = batch_api
        self._core = core_api

    @classmethod
    def connect(cls, namespace: str, settings: PodSettings, *, kubeconfig: str | None = None,
                context: str | None = None) -> KubernetesEngine:
        """The engine on the cluster's API: the pod's service account inside a cluster, else kubeconfig."""
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise ConfigError("shipyard k8s needs the kubernetes client: pip install 'shipyard[k8s]'") from exc
        try:
            if kubeconfig or context or not _in_cluster(config):
                config.load_kube_config(config_file=kubeconfig, context=context)
        except (config.ConfigException, OSError) as exc:
            raise ConfigError(f"no Kubernetes credentials: not in a cluster, and kubeconfig "
                              f"{kubeconfig or '~/.kube/config ($KUBECONFIG)'}: {exc}") from exc
        return cls(namespace, settings, batch_api=client.BatchV1Api(), core_api=client.CoreV1Api())

    def check(self, request: JobRequest) -> None:
        check_request(request, self.settings)

    def submit(self, request: JobRequest) -> str:
        job = build_job(request, self.settings)
        name = job_name_for(request)
        uid = None
        with _api(f"create job {name}", conflict_ok=True):
            answer = self._batch.create_namespaced_job(self.namespace, job, _preload_content=False,
                                                       _request_timeout=REQUEST_TIMEOUT)
            uid = _uid(answer.data)
        if request.env:
            self._create_secret(request, name, uid or self._read_job(name).metadata.uid)
        log.info("kubernetes: job %s for task %s in namespace %s", name, request.task_id, self.namespace)
        return name

    def statuses(self) -> list[JobStatus]:
        selector = f"{LABEL_GLUE}={self.settings.glue}"
        jobs = self._list(self._batch.list_namespaced_job, "V1Job", label_selector=selector)
        pods = self._list(self._core.list_namespaced_pod, "V1Pod", label_selector=selector)
        by_job = _newest_pod_by_job(pods)
        out = []
        for job in jobs:
            name = job.metadata.name
            phase, reason, exit_code = state = job_state(job, by_job.get(name))
            if is_stuck(state):
                self._end_stuck(name, reason)
            labels, annotations = job.metadata.labels or {}, job.metadata.annotations or {}
            attempt = labels.get(LABEL_ATTEMPT, "")
            out.append(JobStatus(job_id=name, task_id=labels.get(LABEL_TASK, ""), phase=phase, reason=reason,
                                 exit_code=exit_code, attempt=int(attempt) if attempt.isdigit() else None,
                                 key=annotations.get(ANNOTATION_KEY, "")))
        return out

    def cancel(self, job_id: str, grace_s: float) -> None:
        """The pods first, each with the grace (SIGTERM, then SIGKILL after it), then the Job itself."""
        grace = max(0, int(grace_s))
        pods = self._list(self._core.list_namespaced_pod, "V1Pod", label_selector=f"{LABEL_GLUE}={self.settings.glue}")
        for pod in pods:
            if _owner_job(pod) == job_id:
                with _api(f"delete pod {pod.metadata.name}", missing_ok=True):
                    self._core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=grace,
                                                     _request_timeout=REQUEST_TIMEOUT)
        self._delete_job(job_id, grace, "Foreground")
        log.info("kubernetes: job %s deleted (grace %d s)", job_id, grace)

    def _list(self, call: Any, kind: str, **selector: str) -> list[Any]:
        """One list call, read as the client's models of each item's metadata and status only.

        The glue reads nothing else, and turning the specs and managedFields of every pod into
        models was most of a round's time (4/5 of it at 500 jobs: bench/bench_k8s_engine.py)."""
        what = f"list {kind[2:].lower()}s"
        with _api(what):
            answer = call(self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **selector)
            try:
                items = json.loads(answer.data)["items"] or []
            except (ValueError, KeyError, TypeError) as exc:
                raise EngineUnavailable(f"kubernetes API {what}: an answer that is not a list: {exc}") from exc
        return [from_manifest(_slim(item), kind) for item in items]

    def _read_job(self, name: str) -> Any:
        """The job an earlier submit of this attempt made (list: the one read verb the Role grants for jobs)."""
        items = self._list(self._batch.list_namespaced_job, "V1Job", field_selector=f"metadata.name={name}")
        if not items:
            raise EngineUnavailable(f"kubernetes: job {name} was there a moment ago and is gone; retrying")
        return items[0]

    def _create_secret(self, request: JobRequest, name: str, uid: str) -> None:
        """The job's variables; a job whose secret cannot be made would wait for ever, so it goes too."""
        try:
            with _api(f"create secret {name}", conflict_ok=True):
                self._core.create_namespaced_secret(self.namespace, build_secret(request, self.settings, name, uid),
                                                    _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        except (EngineUnavailable, JobRejected):
            with suppress(EngineUnavailable):
                self._delete_job(name, 0, "Background")
            raise

    def _end_stuck(self, name: str, reason: str) -> None:
        """A job whose pod will never start (image pull) holds its GPUs for ever: delete it once reported."""
        log.warning("kubernetes: job %s ends: %s", name, reason)
        try:
            self._delete_job(name, 0, "Background")
        except EngineUnavailable as exc:
            log.warning("kubernetes: could not delete stuck job %s (next round retries): %s", name, exc)

    def _delete_job(self, name: str, grace: int, propagation: str) -> None:
        with _api(f"delete job {name}", missing_ok=True):
            self._batch.delete_namespaced_job(name, self.namespace, grace_period_seconds=grace,
                                              propagation_policy=propagation, _request_timeout=REQUEST_TIMEOUT)


def _in_cluster(config: Any) -> bool:
    """The pod's service account, when the glue runs in a pod (its token and the API's address are there)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        return False
    return True


def _uid(data: bytes) -> str | None:
    """The uid of the object an API call answered with (read without turning it into models)."""
    try:
        return str(json.loads(data)["metadata"]["uid"])
    except (ValueError, KeyError, TypeError):
        return None


def _slim(item: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (item.get("metadata") or {}).items() if k != "managedFields"}
    return {"metadata": meta, "status": item.get("status") or {}}


def _owner_job(pod: Any) -> str | None:
    for ref in pod.metadata.owner_references or []:
        if ref.kind == "Job":
            return str(ref.name)
    return None


def _newest_pod_by_job(pods: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pod in pods:
        owner = _owner_job(pod)
        if owner is None:
            continue
        seen = out.get(owner)
        if seen is None or _created(pod) >= _created(seen):
            out[owner] = pod
    return out


def _created(pod: Any) -> float:
    stamp = pod.metadata.creation_timestamp
    return stamp.timestamp() if stamp is not None else 0.0


@contextmanager
def _api(what: str, *, missing_ok: bool = False, conflict_ok: bool = False) -> Iterator[None]:
    """One API call's failures in the glue's words: EngineUnavailable to retry, JobRejected for the task."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        status = int(exc.status or 0)
        if (status == 404 and missing_ok) or (status == 409 and conflict_ok):
            return
        raise _classify(what, status, exc) from exc
    except (HTTPError, OSError) as exc:
        raise EngineUnavailable(f"kubernetes API unreachable ({what}): {exc}") from exc


def _classify(what: str, status: int, exc: Any) -> Exception:
    reason = _message(exc)
    if status == 422 or status == 400:
        return JobRejected(f"kubernetes refused the job ({what}): {reason}")
    if status in UNAVAILABLE_STATUSES or status >= 500:
        hint = " (check the glue's Role: deploy/kubernetes/glue.yaml)" if status == 403 else ""
        return EngineUnavailable(f"kubernetes API {what}: {status} {reason}{hint}")
    return EngineUnavailable(f"kubernetes API {what}: unexpected {status} {reason}")


def _message(exc: Any) -> str:
    """The API server's own message from a Status body, else the HTTP reason."""
    import json

    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or "")
