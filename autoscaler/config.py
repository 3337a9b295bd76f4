"""The autoscaler's configuration: one HOCON (or JSON) file, read once, validated, frozen.

See configs/autoscaler.conf for a documented example. Every error names the key it is about
("resources.gpu.price_spot: must be a number >= 0, got 'cheap'"), and unknown keys are
refused, so a typo never silently falls back to a default.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pyhocon import ConfigFactory
from pyhocon.exceptions import ConfigException
from pyparsing import ParseBaseException

from autoscaler.model import Market
from shipyard.errors import ConfigError

DEFAULT_POLL_S = 10.0
"""Seconds between decisions. At most MAX_POLL_S: queues are answered within one poll."""
MAX_POLL_S = 10.0
DEFAULT_IDLE_TIMEOUT_S = 300.0
"""An instance whose worker held no task this long is drained and terminated."""
DEFAULT_SPINUP_TIMEOUT_S = 900.0
"""An instance whose agent has not registered this long after launch is terminated."""
DEFAULT_SPOT_FALLBACK_AFTER = 3
"""Spot failures (refused requests, preemptions, boots that never came up) of one resource type
within DEFAULT_SPOT_RETRY_AFTER_S that switch its new launches to on-demand."""
DEFAULT_SPOT_RETRY_AFTER_S = 1800.0
DEFAULT_AGENT_LONG_POLL_S = 10.0
"""The long-poll the machines' agents use; a drain waits this long plus DRAIN_MARGIN_S."""
DRAIN_MARGIN_S = 5.0
DEFAULT_ORPHAN_GRACE_S = 60.0
"""A task `queued` but in no queue for this long was popped by a worker that went away."""
DEFAULT_CREDENTIAL_TTL_S = 24 * 3600.0
"""Lifetime of a machine's API key; renewed while the machine lives, revoked when it ends."""
DEFAULT_MONTH_RESERVE_H = 1.0
"""A launch must leave this many hours of the whole fleet's cost inside the month budget."""
DEFAULT_MONTH_STOP_MARGIN_S = 600.0
"""When the month budget covers less than this much of the fleet's running time, all stops."""


@dataclass(frozen=True)
class ResourceType:
    name: str
    instance_type: str
    price_on_demand: float                # $/hour
    price_spot: float | None = None       # $/hour; required when spot is on
    spot: bool = False                    # launch spot first, on-demand after repeated failures
    region: str = ""
    zone: str = ""
    subnet_id: str = ""
    image_id: str = ""
    disk_gb: int = 100
    security_group_ids: tuple[str, ...] = ()
    key_name: str = ""
    iam_instance_profile: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0
    queues: tuple[str, ...] = ()          # the agent's queues; default: the queues mapped to it
    docker_image: str = ""
    warm: int = 0                         # instances kept running even when idle

    def price(self, market: Market) -> float:
        if market is Market.SPOT and self.price_spot is not None:
            return self.price_spot
        return self.price_on_demand


@dataclass(frozen=True)
class QueueRule:
    resource: str
    max_instances: int


@dataclass(frozen=True)
class Budget:
    max_per_hour: float | None = None
    queue_max_per_hour: Mapping[str, float] = field(default_factory=dict)
    max_per_month: float | None = None
    month_reserve_h: float = DEFAULT_MONTH_RESERVE_H
    month_stop_margin_s: float = DEFAULT_MONTH_STOP_MARGIN_S


@dataclass(frozen=True)
class Policy:
    """Everything decide() needs besides the observation."""

    resources: Mapping[str, ResourceType]
    queues: Mapping[str, tuple[QueueRule, ...]]
    budget: Budget = field(default_factory=Budget)
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    spinup_timeout_s: float = DEFAULT_SPINUP_TIMEOUT_S
    spot_fallback_after: int = DEFAULT_SPOT_FALLBACK_AFTER
    spot_retry_after_s: float = DEFAULT_SPOT_RETRY_AFTER_S

    def home_queue(self, resource: str) -> str:
        """The queue a resource's instances are charged to when no queue asked for them."""
        for queue, rules in self.queues.items():
            if any(rule.resource == resource for rule in rules):
                return queue
        return self.resources[resource].queues[0]

    def serves(self, resource: str, queue: str) -> tuple[str, ...]:
        return self.resources[resource].queues or (queue,)


@dataclass(frozen=True)
class AgentSettings:
    """What a started machine is told: where the server is and how to run the agent."""

    api_host: str = ""     # default: the server the autoscaler itself talks to
    files_host: str = ""
    web_host: str = ""
    package: str = "shipyard"
    long_poll_s: float = DEFAULT_AGENT_LONG_POLL_S
    worker_prefix: str = "shipyard-as"
    extra_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AwsSettings:
    region: str = ""
    endpoint_url: str = ""   # e.g. a local moto server
    profile: str = ""


@dataclass(frozen=True)
class LocalSettings:
    work_dir: Path = Path("~/.shipyard/autoscaler/local")
    python: str = ""         # default: the interpreter running the autoscaler
    stop_grace_s: float = 10.0


@dataclass(frozen=True)
class AutoscalerConfig:
    name: str
    provider: str
    policy: Policy
    poll_s: float = DEFAULT_POLL_S
    drain_s: float = DEFAULT_AGENT_LONG_POLL_S + DRAIN_MARGIN_S
    orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S
    credential_ttl_s: float = DEFAULT_CREDENTIAL_TTL_S
    state_file: Path = Path("~/.shipyard/autoscaler/state.json")
    agent: AgentSettings = field(default_factory=AgentSettings)
    aws: AwsSettings = field(default_factory=AwsSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    source: Path | None = None


# --- reading -------------------------------------------------------------------------------


class _Section:
    """Typed access to one mapping of the file; remembers which keys were read."""

    def __init__(self, tree: Mapping[str, Any], where: str):
        if not isinstance(tree, Mapping):
            raise ConfigError(f"{where or 'the file'}: must be an object, got {tree!r}")
        self.tree, self.where = tree, where
        self.read: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str) -> Any:
        self.read.add(key)
        return self.tree.get(key)

    def text(self, key: str, default: str = "") -> str:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{self._key(key)}: must be text, got {value!r}")
        return str(value)

    def number(self, key: str, default: float | None = None, *, minimum: float = 0.0,
               maximum: float | None = None) -> Any:
        value = self._get(key)
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, bool) or not number >= minimum or (maximum is not None and number > maximum):
            bound = f">= {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
            raise ConfigError(f"{self._key(key)}: must be a number {bound}, got {value!r}")
        return number

    def integer(self, key: str, default: int, *, minimum: int = 0) -> int:
        value = self.number(key, None, minimum=minimum)
        if value is None:
            return default
        if value != int(value):
            raise ConfigError(f"{self._key(key)}: must be a whole number, got {value!r}")
        return int(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"{self._key(key)}: must be true or false, got {value!r}")

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self._key(key)}: must be a list of text, got {value!r}")
        return tuple(value)

    def section(self, key: str) -> _Section:
        value = self._get(key)
        return _Section({} if value is None else value, self._key(key))

    def text_map(self, key: str) -> Mapping[str, str]:
        sub = self.section(key)
        return MappingProxyType({str(k): sub.text(k) for k in sub.tree})

    def done(self) -> None:
        unknown = sorted(set(self.tree) - self.read)
        if unknown:
            raise ConfigError(f"{self.where or 'the file'}: unknown key(s) {', '.join(unknown)}")


def load_config(path: Path) -> AutoscalerConfig:
    """Read and validate an autoscaler config file (HOCON; JSON is valid HOCON)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"autoscaler config {path} does not exist")
    try:
        tree = ConfigFactory.parse_file(str(path), resolve=True).as_plain_ordered_dict()
    except (ConfigException, ParseBaseException, OSError) as exc:
        raise ConfigError(f"cannot read autoscaler config {path}: {exc}") from None
    return parse_config(tree, source=path)


def parse_config(tree: Mapping[str, Any], *, source: Path | None = None) -> AutoscalerConfig:
    root = _Section(tree, "")
    resources = _resources(root.section("resources"))
    queues = _queues(root.section("queues"), resources)
    resources = _default_agent_queues(resources, queues)
    policy = Policy(
        resources=MappingProxyType(resources), queues=MappingProxyType(queues),
        budget=_budget(root.section("budget"), queues),
        idle_timeout_s=root.number("idle_timeout_s", DEFAULT_IDLE_TIMEOUT_S),
        spinup_timeout_s=root.number("spinup_timeout_s", DEFAULT_SPINUP_TIMEOUT_S, minimum=1),
        spot_fallback_after=root.integer("spot_fallback_after", DEFAULT_SPOT_FALLBACK_AFTER, minimum=1),
        spot_retry_after_s=root.number("spot_retry_after_s", DEFAULT_SPOT_RETRY_AFTER_S),
    )
    agent = _agent(root.section("agent"))
    provider = root.text("provider", "aws")
    if provider not in ("aws", "local"):
        raise ConfigError(f"provider: must be 'aws' or 'local', got {provider!r}")
    name = root.text("name", "shipyard")
    if provider == "aws":
        for resource in resources.values():
            if not resource.image_id:
                raise ConfigError(f"resources.{resource.name}.image_id: required with provider = aws")
    config = AutoscalerConfig(
        name=name, provider=provider, policy=policy,
        poll_s=root.number("poll_s", DEFAULT_POLL_S, minimum=0.05, maximum=MAX_POLL_S),
        drain_s=root.number("drain_s", agent.long_poll_s + DRAIN_MARGIN_S),
        orphan_grace_s=root.number("orphan_grace_s", DEFAULT_ORPHAN_GRACE_S),
        credential_ttl_s=root.number("credential_ttl_s", DEFAULT_CREDENTIAL_TTL_S, minimum=60),
        state_file=Path(root.text("state_file", f"~/.shipyard/autoscaler/{name}.json")).expanduser(),
        agent=agent, aws=_aws(root.section("aws")), local=_local(root.section("local"), name),
        source=source,
    )
    root.done()
    return config


def _resources(section: _Section) -> dict[str, ResourceType]:
    if not section.tree:
        raise ConfigError("resources: at least one resource type is required")
    out = {}
    for name in section.tree:
        sub = section.section(name)
        spot = sub.flag("spot")
        resource = ResourceType(
            name=name, instance_type=sub.text("instance_type") or name,
            price_on_demand=sub.number("price_on_demand", None), price_spot=sub.number("price_spot", None),
            spot=spot, region=sub.text("region"), zone=sub.text("zone"), subnet_id=sub.text("subnet_id"),
            image_id=sub.text("image_id"), disk_gb=sub.integer("disk_gb", 100, minimum=1),
            security_group_ids=sub.texts("security_group_ids"), key_name=sub.text("key_name"),
            iam_instance_profile=sub.text("iam_instance_profile"), tags=sub.text_map("tags"),
            gpus=sub.integer("gpus", 0), queues=sub.texts("queues"), docker_image=sub.text("docker_image"),
            warm=sub.integer("warm", 0),
        )
        if resource.price_on_demand is None:
            raise ConfigError(f"resources.{name}.price_on_demand: required (dollars per hour)")
        if spot and resource.price_spot is None:
            raise ConfigError(f"resources.{name}.price_spot: required when spot = true")
        sub.done()
        out[name] = resource
    return out


def _queues(section: _Section, resources: Mapping[str, ResourceType]) -> dict[str, tuple[QueueRule, ...]]:
    if not section.tree:
        raise ConfigError("queues: at least one queue -> [resource, max instances] mapping is required")
    out = {}
    for queue, rules in section.tree.items():
        section.read.add(queue)
        if not isinstance(rules, list) or not rules:
            raise ConfigError(f"queues.{queue}: must be a non-empty list of {{resource, max}} entries")
        parsed = []
        for index, rule in enumerate(rules):
            where = f"queues.{queue}[{index}]"
            if isinstance(rule, list) and len(rule) == 2:  # ClearML's [(resource, max)] form
                rule = {"resource": rule[0], "max": rule[1]}
            sub = _Section(rule, where)
            resource = sub.text("resource")
            if resource not in resources:
                raise ConfigError(f"{where}.resource: unknown resource type {resource!r}")
            parsed.append(QueueRule(resource, sub.integer("max", 1, minimum=1)))
            sub.done()
        out[queue] = tuple(parsed)
    return out


def _default_agent_queues(resources: dict[str, ResourceType],
                          queues: Mapping[str, tuple[QueueRule, ...]]) -> dict[str, ResourceType]:
    from dataclasses import replace

    out = {}
    for name, resource in resources.items():
        mapped = tuple(q for q, rules in queues.items() if any(r.resource == name for r in rules))
        if not resource.queues and not mapped:
            raise ConfigError(f"resources.{name}: no queue maps to it and it lists no queues of its own")
        out[name] = resource if resource.queues else replace(resource, queues=mapped)
    return out


def _budget(section: _Section, queues: Mapping[str, Any]) -> Budget:
    per_queue = section.section("queues")
    caps = {}
    for queue in per_queue.tree:
        if queue not in queues:
            raise ConfigError(f"budget.queues.{queue}: not a configured queue")
        caps[queue] = per_queue.number(queue)
    budget = Budget(
        max_per_hour=section.number("max_per_hour"), queue_max_per_hour=MappingProxyType(caps),
        max_per_month=section.number("max_per_month"),
        month_reserve_h=section.number("month_reserve_h", DEFAULT_MONTH_RESERVE_H),
        month_stop_margin_s=section.number("month_stop_margin_s", DEFAULT_MONTH_STOP_MARGIN_S),
    )
    section.done()
    return budget


def _agent(section: _Section) -> AgentSettings:
    agent = AgentSettings(
        api_host=section.text("api_host"), files_host=section.text("files_host"),
        web_host=section.text("web_host"), package=section.text("package", "shipyard"),
        long_poll_s=section.number("long_poll_s", DEFAULT_AGENT_LONG_POLL_S, minimum=1),
        worker_prefix=section.text("worker_prefix", "shipyard-as"), extra_env=section.text_map("extra_env"),
    )
    section.done()
    return agent


def _aws(section: _Section) -> AwsSettings:
    aws = AwsSettings(region=section.text("region"), endpoint_url=section.text("endpoint_url"),
                      profile=section.text("profile"))
    section.done()
    return aws


def _local(section: _Section, name: str) -> LocalSettings:
    local = LocalSettings(
        work_dir=Path(section.text("work_dir", f"~/.shipyard/autoscaler/{name}-local")).expanduser(),
        python=section.text("python"), stop_grace_s=section.number("stop_grace_s", 10.0),
    )
    section.done()
    return local
