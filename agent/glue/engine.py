"""The interface between Shipyard's claim loop and a cluster engine.

    queues --claim--> GlueLoop --submit--> Engine (Slurm, Kubernetes, in-memory)
                         ^                    |
                         +-----statuses-------+   phases mapped back onto the task's life

The loop (agent/glue/loop.py) claims tasks the way the daemon does (long-poll, leases, GPU
specs), turns each into a `JobRequest` and hands it to an `Engine`; it watches the engine's
`JobStatus`es and maps them back: PENDING shows as the task's status message, SUCCEEDED and
FAILED end it (the task's own `shipyard execute` reports most of that itself), INFRA requeues it
through the lease machinery, CANCELLED follows an abort. Engines find their own jobs again by
name/label after a restart (`statuses()` lists every job this glue owns), so the loop keeps no
state of its own that a restart could lose.

Implementations: `agent/glue/slurm.py` (sbatch/squeue/scancel/sinfo), `agent/glue/k8s.py`
(the official `kubernetes` client, one Job per task), and an in-memory engine for the loop's
unit tests.
"""
from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from shipyard.errors import InfrastructureError, TaskError

JOB_PREFIX = "shipyard-"
"""Every engine job's name starts with this and carries the task id: `shipyard-<task id>`."""


def describe_exit(code: int | None) -> str:
    """A job's exit code as a person reads it: `exit code 3`; past 128 the shell's convention for a
    process ended by a signal, named: `exit code 137 (signal 9, SIGKILL)`."""
    if code is None:
        return "no exit code"
    named = {sig.value: sig.name for sig in signal.Signals}.get(code - 128)
    return f"exit code {code} (signal {code - 128}, {named})" if named else f"exit code {code}"


def job_name(task_id: str) -> str:
    return f"{JOB_PREFIX}{task_id}"


@dataclass(frozen=True)
class JobRequest:
    """One task as an engine job: what runs, with what, for how long."""

    task_id: str
    queue: str
    command: tuple[str, ...]
    """What the job runs on its node, e.g. ("shipyard", "execute", "--id", task_id)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables for the job (server address, the task's own short-lived key); never logged."""
    gpus: int = 0
    cpus: int | None = None
    memory_mb: int | None = None
    time_limit_s: float | None = None
    image: str | None = None
    """The task's container image (Kubernetes); Slurm ignores it."""
    options: tuple[str, ...] = ()
    """Extra engine options (sbatch flags, pod overrides), already checked against the allow-list."""
    attempt: int | None = None
    docker_args: tuple[str, ...] = ()
    """The task's Docker arguments (its container.arguments, split into words): Kubernetes maps the
    allowed ones onto the pod and refuses the rest; Slurm ignores them."""

    @property
    def name(self) -> str:
        return job_name(self.task_id)


class Phase(str, Enum):
    PENDING = "pending"        # accepted, waiting for resources (reason says why)
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"          # the task's own failure: OOM, time limit, non-zero exit (reason says which)
    CANCELLED = "cancelled"    # ended by an abort
    INFRA = "infra"            # the engine's failure (node lost, preempted, boot/image failure): requeue


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    task_id: str
    phase: Phase
    reason: str = ""
    """The engine's own word for why: "Resources", "OUT_OF_MEMORY", "OOMKilled", "NODE_FAIL"."""
    exit_code: int | None = None
    attempt: int | None = None
    """The claim's attempt the job was submitted for (from its comment/label); None when the engine
    no longer says (a job found only in the engine's history)."""
    key: str = ""
    """The access key (never the secret) of the task key the job carries, so a restarted glue can
    extend and revoke it."""
    output: str = ""
    """Where the engine wrote the job's own output (Slurm's -o file), attached when the task died
    before its log shipper started."""

    @property
    def ended(self) -> bool:
        return self.phase not in (Phase.PENDING, Phase.RUNNING)


class Engine(Protocol):
    name: str
    """"slurm", "kubernetes", "memory": shown in status messages ("pending in slurm job 12: ...")."""

    def check(self, request: JobRequest) -> None:
        """Raise `JobRejected` naming the setting when the request can never run here."""

    def submit(self, request: JobRequest) -> str:
        """Start the job; return the engine's job id. `EngineUnavailable` when it cannot be reached."""

    def statuses(self) -> list[JobStatus]:
        """Every job of this glue the engine still knows (found by name/label, so restart-safe)."""

    def cancel(self, job_id: str, grace_s: float) -> None:
        """Stop the job: signal the task, wait up to `grace_s`, then end it for good."""


class JobRejected(TaskError):
    """The task asks for something this engine or its allow-list will never give; it fails at once."""

    kind = "engine_rejected"


class EngineUnavailable(InfrastructureError):
    """The engine cannot be reached (slurmctld down, API server away); tasks stay queued, retry."""

    kind = "engine_unavailable"
