"""What a Kubernetes Job and its pod mean for the task: the pure state mapping.

    job_state(job, pod) -> (Phase, reason, exit_code)

Read in this order; the first that matches wins:

    job being deleted (deletionTimestamp)              CANCELLED  "deleted"           an abort
    job condition Complete / status.succeeded          SUCCEEDED
    job condition Failed, reason DeadlineExceeded      FAILED     "DeadlineExceeded"  the Job's deadline
    pod Failed, reason DeadlineExceeded                FAILED     "DeadlineExceeded"  the pod's (the glue's)
    pod Failed, reason Evicted / NodeLost / Shutdown /
        NodeShutdown / Terminated / Unexpected...      INFRA      kubelet's message   requeued
    pod condition DisruptionTarget=True                INFRA      its reason          preempted, drained, taint
    task container terminated OOMKilled                FAILED     "OOMKilled"         over its memory limit
    task container terminated, exit code != 0          FAILED     "Error" + exit code
    job Failed, its pod gone                           INFRA      "pod lost"          node deleted with the pod
    container waiting ErrImagePull / ImagePullBackOff /
        InvalidImageName / ErrImageNeverPull           FAILED if the task chose the image, else INFRA
    pod Pending, PodScheduled=False                    PENDING    scheduler's message "0/3 nodes ... gpu"
    pod Pending / no pod yet                           PENDING    waiting reason (ContainerCreating, ...)
    pod Running (or phase Unknown: node unreachable)   RUNNING
    pod Succeeded                                      SUCCEEDED

An image that cannot be pulled never fails the pod by itself (kubelet retries for ever, holding
the pod's GPUs), so the engine deletes such a job when it reports it. The task's own
`shipyard execute` reports most endings to the server itself; these phases matter when it could
not (it never started, or was killed from outside). Reasons start with Kubernetes' own word
("OOMKilled", "DeadlineExceeded", "Evicted: <kubelet's message>", "Unschedulable: <scheduler's
message>"): the loop (agent/glue/follow.py) words the task's ending from that first word.
"""
from __future__ import annotations

from typing import Any

from agent.glue.engine import Phase
from agent.glue.k8s_pod import ANNOTATION_IMAGE_SOURCE, TASK_CONTAINER

State = tuple[Phase, str, "int | None"]

INFRA_POD_REASONS = frozenset({"Evicted", "NodeLost", "Shutdown", "NodeShutdown", "Terminated",
                               "UnexpectedAdmissionError", "NodeAffinity", "OutOfcpu", "OutOfmemory",
                               "OutOfpods", "Preempting"})
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def job_state(job: Any, pod: Any | None) -> State:
    """The task's phase from its Job and the Job's newest pod (None when it has none)."""
    if job.metadata.deletion_timestamp is not None:
        return Phase.CANCELLED, "deleted", None
    ended = _job_ended(job)
    if ended is not None and (ended[0] is not Phase.FAILED or ended[1] == "DeadlineExceeded"):
        return ended
    if pod is not None:
        state = _pod_ended(pod) or _pod_stuck(job, pod) or ended
        return state if state is not None else _pod_live(pod)
    if ended is not None:  # Failed, and the pod that could say why is gone
        return Phase.INFRA, "pod lost: " + (ended[1] or "the job failed without its pod"), None
    return _pod_live(None)


def is_stuck(state: State) -> bool:
    """A state the pod will never leave by itself (image pull): the engine deletes the job."""
    return state[0] in (Phase.FAILED, Phase.INFRA) and state[1].split(":")[0] in IMAGE_PULL_REASONS


def _job_ended(job: Any) -> State | None:
    status = job.status
    for cond in (status.conditions or []) if status else []:
        if cond.status != "True":
            continue
        if cond.type == "Complete":
            return Phase.SUCCEEDED, "", 0
        if cond.type == "Failed":
            if cond.reason == "DeadlineExceeded":
                return Phase.FAILED, "DeadlineExceeded", None
            return Phase.FAILED, _join(cond.reason, cond.message), None
    if status is not None and status.succeeded:
        return Phase.SUCCEEDED, "", 0
    return None


def _pod_ended(pod: Any) -> State | None:
    status = pod.status
    if status is None:
        return None
    if status.phase == "Failed" and status.reason == "DeadlineExceeded":
        return Phase.FAILED, "DeadlineExceeded", None
    if status.phase == "Failed" and status.reason in INFRA_POD_REASONS:
        return Phase.INFRA, _join(status.reason, status.message), None
    for cond in status.conditions or []:
        if cond.type == "DisruptionTarget" and cond.status == "True":
            return Phase.INFRA, _join(cond.reason, cond.message), None
    terminated = _task_status(pod, "terminated")
    if terminated is not None and (terminated.exit_code or terminated.reason == "OOMKilled"):
        if terminated.reason == "OOMKilled":
            return Phase.FAILED, "OOMKilled", terminated.exit_code
        return Phase.FAILED, _join(terminated.reason or "Error", terminated.message), terminated.exit_code
    if status.phase == "Succeeded":
        return Phase.SUCCEEDED, "", 0
    if status.phase == "Failed":
        return Phase.FAILED, _join(status.reason or "pod failed", status.message), None
    return None


def _pod_stuck(job: Any, pod: Any) -> State | None:
    waiting = _task_status(pod, "waiting")
    if waiting is None or waiting.reason not in IMAGE_PULL_REASONS:
        return None
    annotations = job.metadata.annotations or {}
    chosen_by_task = annotations.get(ANNOTATION_IMAGE_SOURCE) == "task"
    image = _task_image(pod)
    reason = _join(f"{waiting.reason}: image {image} cannot be pulled", waiting.message)
    return (Phase.FAILED if chosen_by_task else Phase.INFRA), reason, None


def _pod_live(pod: Any | None) -> State:
    if pod is None or pod.status is None:
        return Phase.PENDING, "waiting for the job's pod", None
    status = pod.status
    if status.phase in ("Running", "Unknown"):
        return Phase.RUNNING, "" if status.phase == "Running" else "node unreachable (pod phase Unknown)", None
    for cond in status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False":
            return Phase.PENDING, _join(cond.reason or "Unschedulable", cond.message), None
    waiting = _task_status(pod, "waiting")
    if waiting is not None:
        return Phase.PENDING, _join(waiting.reason, waiting.message), None
    return Phase.PENDING, status.reason or status.phase or "Pending", None


def _task_status(pod: Any, which: str) -> Any | None:
    """The task container's `terminated` or `waiting` state, if it is in that state."""
    statuses = pod.status.container_statuses or []
    named = [s for s in statuses if s.name == TASK_CONTAINER] or statuses[:1]
    for status in named:
        state = status.state
        if state is not None and getattr(state, which) is not None:
            return getattr(state, which)
    return None


def _task_image(pod: Any) -> str:
    """From the container's status (the glue reads pods without their spec)."""
    statuses = pod.status.container_statuses or []
    named = [s for s in statuses if s.name == TASK_CONTAINER] or statuses[:1]
    return str(named[0].image) if named and named[0].image else "?"


def _join(reason: str | None, message: str | None) -> str:
    return ": ".join(part for part in (reason, (message or "").strip()) if part)
