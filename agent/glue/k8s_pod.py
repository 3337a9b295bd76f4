"""A task as a Kubernetes Job: the operator's pod template merged with what the task asks for.

    load_template(path) -> dict          pod.yaml (a Pod, or {metadata, spec}); unknown fields refused
    pod_overrides(options, allowed)      the task's Docker arguments -> PodOverrides (allow-listed)
    build_job(request, settings)         -> kubernetes.client.V1Job (one pod, backoffLimit 0)
    build_secret(request, settings, name, uid) -> V1Secret of the job's variables, owned by the Job

Everything here works on the official client's own models (V1Job, V1PodSpec, V1Container...), so
what the engine sends is exactly what `ApiClient().sanitize_for_serialization` serializes. The
template wins for what the task does not say; the task's image, resources and allowed arguments
win over the template for the one container that runs `shipyard execute` (the container named
`task`, else the first).

Docker arguments a task may carry, and what each becomes on the pod:

    -e/--env NAME=VALUE   the container's env            (allowed by default)
    -w/--workdir DIR      the container's workingDir     (allowed by default)
    --shm-size SIZE       a memory emptyDir at /dev/shm  (allowed by default)
    --cpus N              cpu request and limit          (operator opt-in: --allow-option --cpus)
    -m/--memory SIZE      memory request and limit       (operator opt-in)
    -u/--user UID[:GID]   securityContext runAsUser/Group (operator opt-in)

Any other argument (--privileged, --network, -v, ...) has no safe pod equivalent and is refused
with `JobRejected` naming it; so is a known one the operator did not allow.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import re
import shlex
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.glue.engine import JobRejected, JobRequest
from shipyard.errors import ConfigError

LABEL_TASK = "shipyard.io/task-id"
LABEL_GLUE = "shipyard.io/glue"
LABEL_ATTEMPT = "shipyard.io/attempt"
LABEL_QUEUE = "shipyard.io/queue"
ANNOTATION_KEY = "shipyard.io/task-key"
"""The access key (never the secret) of the task's own key, so a restarted glue can revoke it."""
KEY_VARIABLE = "CLEARML_API_ACCESS_KEY"
ANNOTATION_IMAGE_SOURCE = "shipyard.io/image-source"
"""`task` when the task chose the image (a pull failure is then the task's fault), else `template`."""
TASK_CONTAINER = "task"
GPU_RESOURCE = "nvidia.com/gpu"

OPTION_NAMES: dict[str, str] = {
    "-e": "--env", "--env": "--env", "-w": "--workdir", "--workdir": "--workdir", "--shm-size": "--shm-size",
    "--cpus": "--cpus", "-m": "--memory", "--memory": "--memory", "-u": "--user", "--user": "--user",
}
"""Every Docker argument that has a pod equivalent, by each of its spellings."""
DEFAULT_ALLOWED_OPTIONS = frozenset({"--env", "--workdir", "--shm-size"})

_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_DOCKER_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([bkmg]?)b?$", re.IGNORECASE)


@dataclass(frozen=True)
class PodSettings:
    """What the operator decides for every task pod (from `shipyard k8s` options)."""

    template: Mapping[str, Any] = field(default_factory=dict)
    """The pod template as a manifest mapping (see load_template); empty: a bare pod."""
    image: str | None = None
    """Image when neither the task nor the template names one."""
    glue: str = "shipyard"
    """Label value that marks this glue's jobs: two glues in one namespace keep apart."""
    allowed_options: frozenset[str] = DEFAULT_ALLOWED_OPTIONS
    allow_task_image: bool = True
    image_prefixes: tuple[str, ...] = ()
    """When set, a task's image must start with one of these (e.g. "registry.example.com/ml/")."""
    max_gpus: int | None = None
    """Most GPUs one pod may ask for (the largest node's): more is refused at once, not left pending."""
    ttl_after_finished_s: int = 3600
    grace_s: int = 30


@dataclass
class PodOverrides:
    """What a task's Docker arguments change on its container."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    shm_size: str | None = None
    cpus: str | None = None
    memory: str | None = None
    run_as: tuple[int, int | None] | None = None


def load_template(path: Path) -> dict[str, Any]:
    """pod.yaml as a mapping {metadata, spec}; ConfigError naming the file and the field when it is not one."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--template {path}: cannot read it: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("spec", {}), dict):
        raise ConfigError(f"--template {path}: expected a Pod manifest (a mapping with metadata and spec)")
    if data.get("kind") not in (None, "Pod", "PodTemplate"):
        raise ConfigError(f"--template {path}: kind {data.get('kind')!r}: expected a Pod")
    template = data.get("template", data) if data.get("kind") == "PodTemplate" else data
    pod = {"metadata": template.get("metadata") or {}, "spec": template.get("spec") or {}}
    pod["spec"].setdefault("containers", [{"name": TASK_CONTAINER}])
    try:
        model = from_manifest(pod, "V1PodTemplateSpec")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--template {path}: not a valid pod: {exc}") from exc
    dropped = _dropped_fields(pod, to_manifest(model))
    if dropped:
        raise ConfigError(f"--template {path}: {dropped[0]} is not a field Kubernetes knows (misspelt?)")
    return pod


@functools.lru_cache(maxsize=1)
def _codec() -> Any:
    """One ApiClient for (de)serializing: each new one builds a Configuration and a connection pool."""
    from kubernetes.client import ApiClient

    return ApiClient()


def from_manifest(data: Mapping[str, Any], kind: str) -> Any:
    """A manifest mapping (camelCase, as in YAML) as the client's model of `kind`, e.g. "V1Job"."""

    class _Body:  # deserialize() reads a response's `.data`
        def __init__(self, text: str):
            self.data = text

    return _codec().deserialize(_Body(json.dumps(data)), kind)


def to_manifest(model: Any) -> Any:
    """The client's model as the JSON-ready mapping the API server receives."""
    return _codec().sanitize_for_serialization(model)


def _dropped_fields(given: Any, kept: Any, at: str = "") -> list[str]:
    """Fields of `given` that the model round trip lost: the ones the client does not know."""
    if isinstance(given, dict):
        kept = kept if isinstance(kept, dict) else {}
        out: list[str] = []
        for key, value in given.items():
            if value in (None, {}, []):
                continue
            path = f"{at}.{key}" if at else str(key)
            out += [path] if key not in kept else _dropped_fields(value, kept[key], path)
        return out
    if isinstance(given, list) and isinstance(kept, list):
        pairs = enumerate(zip(given, kept, strict=False))
        return [p for i, (g, k) in pairs for p in _dropped_fields(g, k, f"{at}[{i}]")]
    return []


def _tokens(options: Iterable[str]) -> list[str]:
    return [token for option in options for token in shlex.split(option)]


def pod_overrides(options: Iterable[str], allowed: Collection[str]) -> PodOverrides:
    """The task's Docker arguments as pod changes; JobRejected naming the first one refused."""
    tokens, overrides = _tokens(options), PodOverrides()
    i = 0
    while i < len(tokens):
        raw = tokens[i]
        name, _, inline = raw.partition("=") if raw.startswith("--") else (raw, "", "")
        canonical = OPTION_NAMES.get(name)
        if canonical is None:
            raise JobRejected(f"docker argument {name} has no Kubernetes pod equivalent and is not allowed "
                              f"(mappable: {', '.join(sorted(set(OPTION_NAMES.values())))})")
        if canonical not in allowed:
            raise JobRejected(f"docker argument {canonical} is not allowed for tasks on this Kubernetes glue "
                              f"(allowed: {', '.join(sorted(allowed)) or 'none'}; the operator can add it "
                              "with `shipyard k8s --allow-option`)")
        if inline == "" and "=" not in raw:
            i += 1
            if i >= len(tokens):
                raise JobRejected(f"docker argument {canonical} needs a value")
            inline = tokens[i]
        _apply(overrides, canonical, inline)
        i += 1
    return overrides


def _apply(overrides: PodOverrides, name: str, value: str) -> None:
    if name == "--env":
        key, eq, val = value.partition("=")
        if not key or not eq:
            raise JobRejected(f"docker argument --env {value}: expected NAME=VALUE")
        overrides.env[key] = val
    elif name == "--workdir":
        overrides.workdir = value
    elif name == "--shm-size":
        overrides.shm_size = quantity(value, "--shm-size")
    elif name == "--cpus":
        overrides.cpus = _cpus(value)
    elif name == "--memory":
        overrides.memory = quantity(value, "--memory")
    else:
        overrides.run_as = _user(value)


def quantity(size: str, what: str) -> str:
    """A Docker size ("2g", "512m", "1024") as a Kubernetes quantity ("2Gi", "512Mi", "1024")."""
    match = _DOCKER_SIZE.match(size.strip())
    if not match:
        raise JobRejected(f"docker argument {what} {size}: expected a size such as 512m or 2g")
    number, unit = match.groups()
    units = ["", "Ki", "Mi", "Gi"]
    power = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3}[unit.lower()]
    if "." not in number:
        return f"{number}{units[power]}"
    # 1.5g: whole units one step down (1536Mi), the way Kubernetes itself would print it
    return f"{math.ceil(float(number) * (1024 if power else 1))}{units[max(power - 1, 0)]}"


def _cpus(value: str) -> str:
    try:
        cpus = float(value)
    except ValueError:
        cpus = -1.0
    if cpus <= 0:
        raise JobRejected(f"docker argument --cpus {value}: expected a positive number")
    return f"{math.ceil(cpus * 1000)}m"


def _user(value: str) -> tuple[int, int | None]:
    uid, _, gid = value.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise JobRejected(f"docker argument --user {value}: a pod needs a numeric UID[:GID]")
    return int(uid), int(gid) if gid else None


def check_request(request: JobRequest, settings: PodSettings) -> PodOverrides:
    """Everything about a request that can never run here, as JobRejected naming the setting."""
    if not _LABEL_VALUE.match(request.task_id) or not _DNS_LABEL.match(job_name_for(request)):
        raise JobRejected(f"task id {request.task_id!r} cannot name a Kubernetes Job (lower-case letters, "
                          "digits and '-', at most 52 characters)")
    if settings.max_gpus is not None and request.gpus > settings.max_gpus:
        raise JobRejected(f"the task asks for {request.gpus} GPUs; the largest node of this Kubernetes glue "
                          f"has {settings.max_gpus} (--max-gpus-per-pod)")
    if request.image:
        _check_image(request.image, settings)
    elif not (settings.image or template_image(settings.template)):
        raise JobRejected("the task names no container image and this Kubernetes glue has no default "
                          "(--image, or an image in the --template's task container)")
    return pod_overrides((*request.docker_args, *request.options), settings.allowed_options)


def template_image(template: Mapping[str, Any]) -> str | None:
    """The image of the template's task container (named `task`, else the first), if it names one."""
    containers = (template.get("spec") or {}).get("containers") or []
    named = [c for c in containers if c.get("name") == TASK_CONTAINER] or containers[:1]
    return named[0].get("image") if named else None


def _check_image(image: str, settings: PodSettings) -> None:
    if not settings.allow_task_image:
        raise JobRejected(f"the task's container image {image} is not allowed: this Kubernetes glue runs every "
                          "task in its template's image (--no-task-image)")
    if settings.image_prefixes and not image.startswith(tuple(settings.image_prefixes)):
        raise JobRejected(f"the task's container image {image} is not allowed (allowed prefixes: "
                          f"{', '.join(settings.image_prefixes)}; --image-prefix)")


def job_name_for(request: JobRequest) -> str:
    """`shipyard-<task>`, and `-<attempt>` for a requeued attempt so it never collides with the last one."""
    return request.name if request.attempt is None else f"{request.name}-{request.attempt}"


def build_job(request: JobRequest, settings: PodSettings) -> Any:
    """The V1Job for one task: template + request + allowed Docker arguments."""
    from kubernetes import client

    overrides = check_request(request, settings)
    template = copy.deepcopy(dict(settings.template))
    template.setdefault("spec", {}).setdefault("containers", [{"name": TASK_CONTAINER}])
    pod = from_manifest(template, "V1PodTemplateSpec")
    pod.metadata = pod.metadata or client.V1ObjectMeta()
    labels = _labels(request, settings)
    pod.metadata.labels = {**(pod.metadata.labels or {}), **labels}
    pod.spec.restart_policy = "Never"
    if pod.spec.termination_grace_period_seconds is None:
        pod.spec.termination_grace_period_seconds = settings.grace_s
    image_source = _fill_container(_task_container(pod.spec), request, settings, overrides)
    _add_shm(pod.spec, overrides.shm_size)
    if request.time_limit_s:
        # The pod's deadline, not the Job's: it counts from the pod's start on its node, so time spent
        # pending for a GPU is not taken from the task's run time.
        limit = math.ceil(request.time_limit_s)
        given = pod.spec.active_deadline_seconds
        pod.spec.active_deadline_seconds = min(limit, given) if given else limit
    spec = client.V1JobSpec(template=pod, backoff_limit=0, ttl_seconds_after_finished=settings.ttl_after_finished_s)
    annotations = {ANNOTATION_IMAGE_SOURCE: image_source}
    if request.env.get(KEY_VARIABLE):
        annotations[ANNOTATION_KEY] = request.env[KEY_VARIABLE]
    meta = client.V1ObjectMeta(name=job_name_for(request), labels=labels, annotations=annotations)
    return client.V1Job(api_version="batch/v1", kind="Job", metadata=meta, spec=spec)


def build_secret(request: JobRequest, settings: PodSettings, job_name: str, job_uid: str) -> Any:
    """The job's variables (server address, the task's own key) as a Secret the Job owns: they stay out of
    the Job's spec, which anyone with `view` on the namespace can read, and go when the Job goes."""
    from kubernetes import client

    owner = client.V1OwnerReference(api_version="batch/v1", kind="Job", name=job_name, uid=job_uid,
                                    controller=False, block_owner_deletion=False)
    meta = client.V1ObjectMeta(name=job_name_for(request), labels=_labels(request, settings),
                               owner_references=[owner])
    return client.V1Secret(api_version="v1", kind="Secret", metadata=meta, type="Opaque",
                           string_data=dict(request.env))


def _labels(request: JobRequest, settings: PodSettings) -> dict[str, str]:
    labels = {LABEL_TASK: request.task_id, LABEL_GLUE: settings.glue, "app.kubernetes.io/managed-by": "shipyard"}
    if request.attempt is not None:
        labels[LABEL_ATTEMPT] = str(request.attempt)
    if _LABEL_VALUE.match(request.queue) and len(request.queue) <= 63:
        labels[LABEL_QUEUE] = request.queue
    return labels


def _task_container(spec: Any) -> Any:
    from kubernetes import client

    containers = spec.containers or []
    named = [c for c in containers if c.name == TASK_CONTAINER]
    if named or containers:
        return (named or containers)[0]
    container = client.V1Container(name=TASK_CONTAINER)
    spec.containers = [container]
    return container


def _fill_container(container: Any, request: JobRequest, settings: PodSettings, overrides: PodOverrides) -> str:
    """Image, command, env, resources and user of the task's container; returns where the image came from."""
    from kubernetes import client

    source = "task" if request.image else "template"
    container.image = request.image or container.image or settings.image
    if not container.image:
        raise JobRejected("the task names no container image and this Kubernetes glue has no default "
                          "(--image, or an image in the --template's task container)")
    container.command, container.args = list(request.command), None
    env = {e.name: e for e in container.env or [] if e.name not in request.env}
    for key, value in overrides.env.items():
        if key not in request.env:  # the task's -e never shadows the server address or the task's key
            env[key] = client.V1EnvVar(name=key, value=value)
    container.env = list(env.values()) or None
    if request.env:
        container.env_from = [*(container.env_from or []), client.V1EnvFromSource(
            secret_ref=client.V1SecretEnvSource(name=job_name_for(request)))]
    if overrides.workdir:
        container.working_dir = overrides.workdir
    _set_resources(container, request, overrides)
    if overrides.run_as:
        ctx = container.security_context or client.V1SecurityContext()
        ctx.run_as_user, ctx.run_as_group = overrides.run_as[0], overrides.run_as[1] or ctx.run_as_group
        container.security_context = ctx
    return source


def _set_resources(container: Any, request: JobRequest, overrides: PodOverrides) -> None:
    from kubernetes import client

    res = container.resources or client.V1ResourceRequirements()
    limits, requests = dict(res.limits or {}), dict(res.requests or {})
    wanted: dict[str, str] = {}
    if request.gpus:
        wanted[GPU_RESOURCE] = str(request.gpus)
    cpus = overrides.cpus or (f"{request.cpus}" if request.cpus else None)
    if cpus:
        wanted["cpu"] = cpus
    memory = overrides.memory or (f"{request.memory_mb}Mi" if request.memory_mb else None)
    if memory:
        wanted["memory"] = memory
    limits.update(wanted)
    requests.update(wanted)
    if GPU_RESOURCE not in limits:
        # No GPU asked: CUDA images default to NVIDIA_VISIBLE_DEVICES=all, which would show the node's GPUs.
        env = list(container.env or [])
        if not any(e.name == "NVIDIA_VISIBLE_DEVICES" for e in env):
            container.env = [*env, client.V1EnvVar(name="NVIDIA_VISIBLE_DEVICES", value="void")]
    res.limits, res.requests = limits or None, requests or None
    container.resources = res


def _add_shm(spec: Any, size: str | None) -> None:
    """--shm-size: a memory-backed emptyDir mounted at /dev/shm of the task's container."""
    from kubernetes import client

    if not size:
        return
    volumes = [v for v in spec.volumes or [] if v.name != "dshm"]
    spec.volumes = [*volumes, client.V1Volume(name="dshm", empty_dir=client.V1EmptyDirVolumeSource(
        medium="Memory", size_limit=size))]
    container = _task_container(spec)
    mounts = [m for m in container.volume_mounts or [] if m.mount_path != "/dev/shm"]
    container.volume_mounts = [*mounts, client.V1VolumeMount(name="dshm", mount_path="/dev/shm")]
