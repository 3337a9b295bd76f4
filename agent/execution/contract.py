"""The executor contract: what an executor is given, what it returns, what it must do.

`TaskRun` (agent/execution/runner.py) drives an `Executor`; `LocalExecutor`
(agent/execution/local.py) and `DockerExecutor` (agent/execution/docker.py) implement it. The
executors import this module, never the runner, so the contract sits between them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agent.execution import taskenv
from agent.execution.lifecycle import Outcome
from sandbox.git_workspace import Workspace
from shipyard.client.config import Settings

Log = Callable[[str], None]


# -- what an executor is given, returns and must do --------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What every executor needs to know about the run, whatever it runs the task in."""

    settings: Settings
    task_id: str
    target: Path
    """The task's directory on this machine (code/ and whatever the executor keeps there)."""
    connection: taskenv.Connection
    extra_env: Mapping[str, str]
    """The agent's extra_env and the slot's variables (e.g. CUDA_VISIBLE_DEVICES)."""
    gpus: tuple[int, ...]
    note: Log
    attempt: int | None = None


@dataclass
class Prepared:
    """A task ready to start: its code checked out, its environment built or planned."""

    workspace: Workspace
    frozen: list[str] | None
    """The installed packages, when known before the run (a cache hit or a host-side build)."""
    detail: Any = None
    """The executor's own plan (e.g. agent.build.BuiltTask, docker_exec.ContainerPlan)."""
    runtime: Mapping[str, str] = field(default_factory=dict)
    """Properties added to the task's runtime info (where its environment came from, its Python)."""


@dataclass(frozen=True)
class ExitStatus:
    returncode: int
    signalled: int | None = None
    killed: bool = False
    """The agent had to escalate to SIGKILL after the grace period."""


@dataclass
class RunResult:
    exit: ExitStatus
    failure: Outcome | None = None
    """Set when the run ended before the task's own code did (a setup script, the environment, the engine)."""
    frozen: list[str] | None = None
    """The installed packages, when they were learned only during the run."""


class Launched(Protocol):
    """A started task: its output on two pipes, waited for, stopped on request."""

    stdout_fd: int
    stderr_fd: int

    def wait(self, timeout: float | None = None) -> int | None: ...

    def terminate(self, grace_s: float) -> None: ...

    def signal(self, signum: int) -> None:
        """Send the task one signal (a preemption notice); it keeps running."""
        ...

    def reap(self) -> None: ...

    def close(self) -> None: ...


L = TypeVar("L", bound=Launched)
"""The executor's own launch type (a LocalLaunch, a ContainerRun): what start returns, finish takes."""


class Executor(Protocol[L]):
    """Runs one task: prepare, start, finish (after the runner saw it exit), cleanup always.

    Generic in the launch type, since each executor's finish takes back exactly what its start gave.
    """

    def prepare(self, task: dict) -> Prepared: ...

    def start(self, task: dict, prepared: Prepared) -> L: ...

    def finish(self, prepared: Prepared, launched: L) -> RunResult: ...

    def cleanup(self) -> None: ...
