"""Where machines come from: the `CloudProvider` interface and what crosses it.

Implementations live in autoscaler/providers/: `aws` (EC2 through boto3), `local` (agent
processes on this box) and `fake` (in memory, for tests and the simulator). A provider only
starts, lists and stops machines; every decision is the policy's and every bookkeeping step
the loop's.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

from autoscaler.config import ResourceType
from autoscaler.model import Market
from shipyard.errors import InfrastructureError

PENDING, RUNNING, STOPPING, TERMINATED = "pending", "running", "stopping", "terminated"


class ProviderError(InfrastructureError):
    """The provider failed a call (not the market's answer: see CapacityError)."""

    kind = "provider"


class CapacityError(ProviderError):
    """The market refused the request (no spot capacity, price too low, quota): a spot failure."""

    kind = "capacity"


@dataclass(frozen=True)
class AgentBootstrap:
    """What a new machine needs to run an agent: the server, its own short-lived key, queues."""

    worker_id: str
    queues: tuple[str, ...]
    api_host: str
    files_host: str
    web_host: str
    access_key: str
    secret_key: str
    credential_expires: str = ""   # ISO-8601, for the record in the user data
    package: str = "shipyard"
    docker_image: str = ""
    long_poll_s: float = 10.0
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {"CLEARML_API_HOST": self.api_host, "CLEARML_FILES_HOST": self.files_host,
               "CLEARML_WEB_HOST": self.web_host, "CLEARML_API_ACCESS_KEY": self.access_key,
               "CLEARML_API_SECRET_KEY": self.secret_key, "CLEARML_WORKER_ID": self.worker_id,
               "CLEARML_WORKER_NAME": self.worker_id, "SHIPYARD_LONG_POLL_S": f"{self.long_poll_s:g}"}
        if self.docker_image:
            env["SHIPYARD_DOCKER_DEFAULT_IMAGE"] = self.docker_image
        env.update(self.extra_env)
        return env

    def daemon_args(self) -> list[str]:
        return ["daemon", *[arg for queue in self.queues for arg in ("--queue", queue)]]


@dataclass(frozen=True)
class LaunchRequest:
    label: str
    resource: ResourceType
    queue: str
    market: Market
    bootstrap: AgentBootstrap
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceInfo:
    id: str
    label: str
    state: str                 # pending | running | stopping | terminated
    market: Market = Market.ON_DEMAND
    preempted: bool = False    # the provider reclaimed it (spot interruption)
    reason: str = ""

    @property
    def gone(self) -> bool:
        return self.state in (STOPPING, TERMINATED)


class CloudProvider(abc.ABC):
    """Starts, lists and stops the machines of one autoscaler (identified by its name)."""

    name = "provider"

    @abc.abstractmethod
    def launch(self, request: LaunchRequest) -> InstanceInfo:
        """Start one machine. Raises CapacityError when the market refuses, ProviderError else."""

    @abc.abstractmethod
    def describe(self) -> dict[str, InstanceInfo]:
        """Every machine this autoscaler started that the provider still knows, by id."""

    def drain(self, instance_id: str) -> None:  # noqa: B027 - optional hook: providers that cannot reach agents skip it
        """Ask the machine's agent to take no new task (where the provider can reach it)."""

    @abc.abstractmethod
    def terminate(self, instance_id: str) -> None:
        """Stop the machine for good. Stopping one that is already gone is not an error."""

    def close(self) -> None:  # noqa: B027 - optional hook: a no-op for providers without clients
        """Release clients and handles (machines keep running)."""
