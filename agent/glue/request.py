"""A claimed task as an engine job: `GlueSettings` (what the glue was started with) and
`build_request` (task document + queue + settings -> `JobRequest`).

    resources   GPUs: the task's `Shipyard/gpus` hyperparameter, else its queue's spec (`--queue gpu=2`);
                CPUs and memory: `Shipyard/cpus`, `Shipyard/memory_mb`, else the glue's defaults;
                time limit: the smallest of the task's `Shipyard/max_runtime_s`, its queue's and the
                agent's maximum run time, plus the abort grace (the node's own watch ends the task
                `timed_out` first; the engine's limit is the backstop)
    options     the glue's own (config) plus the task's `Shipyard/engine_options`; the engine checks
                the task's against its allow-list (`Engine.check`)
    command     `<node command> execute --id T --attempt N` (the node reports as the glue's claim)
    env         the server's addresses and the task's own short-lived key, never the glue's

Pure functions: nothing here talks to the server or the engine.
"""
from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.glue.engine import JobRejected, JobRequest
from shipyard.errors import ConfigError

SECTION = "Shipyard"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    gpus: int = 0


@dataclass(frozen=True)
class GlueSettings:
    """What `shipyard slurm` / `shipyard k8s` hand the loop."""

    queues: tuple[QueueSpec, ...]
    worker: str
    max_jobs: int = 100
    node_command: tuple[str, ...] = ("shipyard",)
    node_env: Mapping[str, str] = field(default_factory=dict)
    """Extra variables for every job (e.g. SHIPYARD_VENV_CACHE_DIR: the env cache on node-local or shared disk)."""
    options: tuple[str, ...] = ()
    """The glue's own engine options (config), always applied, never checked against the allow-list."""
    cpus: int | None = None
    memory_mb: int | None = None
    max_runtime_s: float | None = None
    queue_max_runtime_s: Mapping[str, str] = field(default_factory=dict)
    grace_s: float = 10.0
    lease_s: float = 60.0
    watch_s: float = 1.0
    retry_s: float = 5.0
    submit_threads: int = 8
    claim_threads: int = 2
    """Claimers, each with its own long-poll: one claim is a round trip, and a single claimer made
    the hand-over follow the server's latency instead of the engine's submit rate."""
    start_together: bool = True
    """Claims that came in one call are started in one `tasks.start_run` (`runs`) where the server offers it."""
    claim_batch: int = 16
    """Most claims one call asks for (the room left under max_jobs/max_tasks caps it; the server
    caps it at its advertised `claim_many` max; 1 where the server offers no `count`)."""


def parse_queue(text: str) -> QueueSpec:
    """`gpu` or `gpu=2` (the queue's GPU spec: how many GPUs each of its tasks gets)."""
    name, _, count = text.partition("=")
    if not name.strip():
        raise ValueError(f"--queue {text!r}: no queue name")
    if not count:
        return QueueSpec(name.strip())
    if not count.strip().isdigit():
        raise ValueError(f"--queue {text!r}: the GPU count must be a whole number, e.g. {name}=2")
    return QueueSpec(name.strip(), int(count))


def _param(task: Mapping[str, Any], key: str) -> Any:
    item = ((task.get("hyperparams") or {}).get(SECTION) or {}).get(key)
    value = item.get("value") if isinstance(item, dict) else item
    return None if value in (None, "") else value


def _whole(task: Mapping[str, Any], key: str) -> int | None:
    value = _param(task, key)
    if value is None:
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise JobRejected(f"hyperparameter {SECTION}/{key} = {value!r} is not a whole number") from None
    if number < 0:
        raise JobRejected(f"hyperparameter {SECTION}/{key} = {value!r} is negative")
    return number


def max_runtime_s(task: Mapping[str, Any], queue: str, settings: GlueSettings) -> float | None:
    """The smallest positive limit of the task's, its queue's and the glue's (as the daemon's run does)."""
    limits = []
    for value in (_param(task, "max_runtime_s"), settings.queue_max_runtime_s.get(queue), settings.max_runtime_s):
        try:
            if value is not None and float(value) > 0:
                limits.append(float(value))
        except (TypeError, ValueError):
            continue
    return min(limits) if limits else None


def task_options(task: Mapping[str, Any]) -> tuple[str, ...]:
    value = _param(task, "engine_options")
    if value is None:
        return ()
    try:
        return tuple(shlex.split(str(value)))
    except ValueError as exc:
        raise JobRejected(f"hyperparameter {SECTION}/engine_options cannot be split into words: {exc}") from None


def container_args(task: Mapping[str, Any]) -> tuple[str, ...]:
    """The task's Docker arguments (`container.arguments`), for engines that map them (Kubernetes)."""
    value = (task.get("container") or {}).get("arguments")
    if not value:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(word) for word in value)
    try:
        return tuple(shlex.split(str(value)))
    except ValueError as exc:
        raise JobRejected(f"container.arguments cannot be split into words: {exc}") from None


def build_request(task: Mapping[str, Any], queue: QueueSpec, attempt: int | None, settings: GlueSettings,
                  server: Mapping[str, str]) -> JobRequest:
    """The job for one claimed task (no key yet: `with_key` adds it once minted)."""
    task_id = str(task["id"])
    runtime = max_runtime_s(task, queue.name, settings)
    gpus = _whole(task, "gpus")
    command = (*settings.node_command, "execute", "--id", task_id)
    if attempt is not None:
        command = (*command, "--attempt", str(attempt))
    return JobRequest(
        task_id=task_id, queue=queue.name, command=command,
        env={**settings.node_env, **server, "CLEARML_WORKER_ID": settings.worker},
        gpus=queue.gpus if gpus is None else gpus,
        cpus=_whole(task, "cpus") or settings.cpus,
        memory_mb=_whole(task, "memory_mb") or settings.memory_mb,
        time_limit_s=None if runtime is None else math.ceil(runtime + settings.grace_s + 30),
        image=((task.get("container") or {}).get("image") or None),
        options=task_options(task),
        docker_args=container_args(task),
        attempt=attempt,
    )


def with_key(request: JobRequest, access_key: str, secret_key: str) -> JobRequest:
    """The request carrying the task's own key (the only credentials the job gets)."""
    from dataclasses import replace

    env = {**request.env, "CLEARML_API_ACCESS_KEY": access_key, "CLEARML_API_SECRET_KEY": secret_key}
    return replace(request, env=env)


def node_env(values: Sequence[str], option: str = "--node-env") -> dict[str, str]:
    """NAME=VALUE words (a CLI option's values) as variables for the engine's jobs."""
    env: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"{option}: {item!r} is not NAME=VALUE")
        env[name] = value
    return env
