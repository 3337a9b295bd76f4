"""The agent's configuration: the one module that reads clearml.conf and the environment.

Each setting is resolved from four layers, the later one winning:

    built-in default  <  config file  <  environment  <  CLI overrides

The config file is found by `find_config_file`, the one lookup every command uses: the path
passed to `load_settings` (`--config-file`), else CLEARML_CONFIG_FILE / TRAINS_CONFIG_FILE, else
`~/clearml.conf`, else the `clearml.conf` that `shipyard up` wrote in its data dir
($SHIPYARD_DATA_DIR or `~/.shipyard`). It is HOCON, read with ClearML's own keys (`api.*`, `agent.*`)
plus a `shipyard { ... }` section for keys ClearML doesn't have. Where one setting has several
names in one layer (e.g. `shipyard.work_dir` and ClearML's `agent.venvs_dir`), the first listed in
`FIELDS` wins. Every value remembers where it came from (`Settings.sources`), so `shipyard config`
can print it.

Settings are addressed by dotted keys that mirror the dataclasses: `api.api_server`,
`agent.poll_interval_s`, `agent.docker.default_image`. CLI overrides use the same keys.

    config          the Settings dataclasses, and the loading: lookup, layers, derived defaults, masking
    config_fields   the table of settings: `Field`, `FIELDS` (key, cast, default, file keys, env vars)
    config_values   the casts the table names (raw value -> typed value, or ValueError), GitCredential
    config_envs     the package-index, env-cache and prepare groups, with their casts
"""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from shipyard.client import config_envs as envs
from shipyard.client.config_envs import PackageSettings, PrepareSettings, VenvCacheSettings
from shipyard.client.config_fields import _BY_KEY, _DERIVED, DEFAULT_DOCKER_ALLOWED_ARGS, FIELDS, Field
from shipyard.client.config_values import PACKAGE_MANAGERS, GitCredential  # noqa: F401  (PACKAGE_MANAGERS: re-exported)
from shipyard.errors import ConfigError
from shipyard.redact import MASK

__all__ = [
    "ApiSettings",
    "AgentSettings",
    "DockerSettings",
    "FIELDS",
    "GitCredential",
    "Settings",
    "derive_servers",
    "find_config_file",
    "load_settings",
]

DEFAULT_SOURCE = "default"
CLI_SOURCE = "cli"
CONFIG_FILE_ENV = ("CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE")
CONFIG_LOOKUP = ("--config-file, $CLEARML_CONFIG_FILE, ~/clearml.conf, then the file `shipyard up` wrote "
                 "($SHIPYARD_DATA_DIR or ~/.shipyard)/clearml.conf")
"""The lookup order, for messages."""
_SECRET_NAME = re.compile(r"(?i)(secret|passw|token|key|credential)")


@dataclass(frozen=True)
class DockerSettings:
    """Docker mode (`shipyard daemon --docker`): each task in its own container (docs/docker.md)."""

    enabled: bool = False
    default_image: str | None = None
    default_args: tuple[str, ...] = ()
    """Arguments that go with the default image (not with an image the task names)."""
    extra_args: tuple[str, ...] = ()
    """The operator's arguments for every container (trusted: not checked against allowed_args)."""
    allowed_args: tuple[str, ...] = DEFAULT_DOCKER_ALLOWED_ARGS
    user: str | None = None
    network: str = "host"
    force_pull: bool = False
    init: bool = True
    uv_binary: Path | None = None
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class ApiSettings:
    api_server: str
    files_server: str
    web_server: str
    access_key: str
    secret_key: str
    verify_ssl: bool


@dataclass(frozen=True)
class AgentSettings:
    worker_id: str
    worker_name: str
    queues: tuple[str, ...]
    poll_interval_s: float
    long_poll_s: float
    status_report_s: float
    ping_s: float
    log_batch_ms: int
    log_batch_bytes: int
    abort_grace_s: float
    max_runtime_s: float | None
    queue_max_runtime_s: Mapping[str, str]
    lease_s: float
    task_key_ttl_s: float
    work_dir: Path
    cache_dir: Path
    venv_cache_dir: Path
    git_cache_dir: Path
    python_binary: str | None
    package_manager_type: str
    """agent.package_manager.type: pip, uv, poetry (lock files they own win) or conda (refused)."""
    force_repo_requirements: bool
    """agent.package_manager.force_repo_requirements_txt: repository files over recorded packages."""
    python_version_strict: bool
    """Fail a task whose recorded Python major.minor is not installed here, instead of substituting."""
    uv_enabled: bool
    git_user: str | None
    git_pass: str | None
    git_credentials: tuple[GitCredential, ...]
    redact_patterns: tuple[str, ...]
    extra_env: Mapping[str, str]
    task_user: str | None
    """Run tasks as this user (name or uid) when the agent runs as root (agent/task_user.py)."""
    preempt_signal: str                       # sent to a task asked to give its GPUs back
    preempt_grace_s: float                    # from that signal to SIGTERM
    queue_preempt_grace_s: Mapping[str, str]  # the same, per queue
    gpu_pack_margin_mb: int                   # kept free on a GPU that tasks share
    foreign_gpu_idle_s: float                 # a GPU someone else used is free again after this long idle
    queue_idle_gpu: Mapping[str, str]         # queue -> "PCT,MINUTES,flag|stop" (agent/gpus/idle.py)
    docker: DockerSettings
    packages: PackageSettings = PackageSettings()
    """Package indexes, their credentials and the torch index map (config_envs.py)."""
    venvs_cache: VenvCacheSettings = VenvCacheSettings()
    """The environment cache's shared path and limits (config_envs.py)."""
    prepare: PrepareSettings = PrepareSettings()
    """Prepare while queued: build queued tasks' environments ahead of pickup (config_envs.py)."""

    def git_credentials_for(self, host: str) -> GitCredential | None:
        """Credentials for a git host: a `shipyard.git_credentials` entry, else agent.git_user/pass."""
        for credential in self.git_credentials:
            if credential.host.lower() == host.lower():
                return credential
        if self.git_user and self.git_pass:
            return GitCredential(host=host, user=self.git_user, password=self.git_pass)
        return None


@dataclass(frozen=True)
class Settings:
    api: ApiSettings
    agent: AgentSettings
    sources: Mapping[str, str]
    config_file: Path | None = None
    config_reason: str = ""
    """Why `config_file` was read (or what was looked for when none was found), for `shipyard doctor`."""
    warnings: tuple[str, ...] = ()
    sdk: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """The config file's `sdk { ... }` section as read (storage credentials, default_output_uri,
    development.*): not the agent's settings but its tasks' SDK's, handed on by agent/execution/taskconf.py."""

    def get(self, key: str) -> Any:
        """The value of a dotted key, e.g. `agent.docker.default_image`."""
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part)
        return value

    def describe(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) for every setting, secrets masked, in `FIELDS` order."""
        return [(spec.key, _masked(spec, self.get(spec.key)), self.sources[spec.key]) for spec in FIELDS]

    def secrets(self) -> tuple[str, ...]:
        """Every secret value the agent knows, for a `Redactor`."""
        found = [self.api.secret_key, self.agent.git_pass or ""]
        found += [credential.password for credential in self.agent.git_credentials]
        found += [value for name, value in self.agent.extra_env.items() if _SECRET_NAME.search(name)]
        found += _secret_leaves(self.sdk)
        found += self.agent.packages.secrets()
        return tuple(secret for secret in found if secret)


def _sdk_section(tree: Mapping[str, Any], path: Path | None) -> dict[str, Any]:
    section = tree.get("sdk")
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"'sdk' in config file {path} must be a section (sdk {{ ... }}), got {section!r}")
    return dict(section)


def _secret_leaves(node: Any, name: str = "") -> list[str]:
    """String values under secret-looking names in a config tree (`sdk.aws.s3.secret`,
    `credentials[].secret`, `containers[].account_key`); `key` names count too: access key ids."""
    if isinstance(node, Mapping):
        return [found for k, v in node.items() for found in _secret_leaves(v, str(k))]
    if isinstance(node, (list, tuple)):
        return [found for v in node for found in _secret_leaves(v, name)]
    return [node] if isinstance(node, str) and _SECRET_NAME.search(name) else []


# --- loading -------------------------------------------------------------------------------------


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve every setting from defaults, the config file, `env` (default os.environ), overrides.

    `overrides` maps dotted keys to values; None values are skipped, so CLI options left unset
    can be passed straight through. Raises ConfigError naming the key and source of a bad value.
    """
    env = os.environ if env is None else env
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    path, reason = find_config_file(config_file, env)
    tree = _read_hocon(path) if path else {}
    overrides = overrides or {}
    _reject_unknown(overrides)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in FIELDS:
        values[spec.key], sources[spec.key] = _resolve(spec, tree, path, env, overrides)
    _derive(values, home)
    return Settings(
        api=ApiSettings(**_section(values, "api.")),
        agent=_agent(values),
        sources=MappingProxyType(sources),
        config_file=path,
        config_reason=reason,
        warnings=tuple(_unknown_shipyard_keys(tree)),
        sdk=MappingProxyType(_sdk_section(tree, path)),
    )


def find_config_file(explicit: Path | None = None, env: Mapping[str, str] | None = None) -> tuple[Path | None, str]:
    """(the clearml.conf to read, why that one), in the order of `CONFIG_LOOKUP`; (None, what was
    looked for) when there is none. A file named by the flag or a variable must exist."""
    env = os.environ if env is None else env
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if explicit is not None:
        return _existing(_expand(Path(explicit), home), "given with --config-file"), "given with --config-file"
    for name in CONFIG_FILE_ENV:
        if env.get(name):
            return _existing(_expand(Path(env[name]), home), f"named by ${name}"), f"named by ${name}"
    if (home / "clearml.conf").is_file():
        return home / "clearml.conf", "~/clearml.conf"
    data_dir = _expand(Path(env["SHIPYARD_DATA_DIR"]), home) if env.get("SHIPYARD_DATA_DIR") else home / ".shipyard"
    if (data_dir / "clearml.conf").is_file():
        return data_dir / "clearml.conf", "written by `shipyard up`"
    return None, f"none found; looked for {CONFIG_LOOKUP}"


def _existing(path: Path, why: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"config file {path} ({why}) does not exist")
    return path


def _read_hocon(path: Path) -> dict[str, Any]:
    """The file's settings. pyhocon (with pyparsing: ~0.1 s of imports) loads only here: a glue
    job's `shipyard execute` that gets everything from its environment never pays for it."""
    from pyhocon import ConfigFactory
    from pyhocon.exceptions import ConfigException
    from pyparsing import ParseBaseException

    try:
        parsed = ConfigFactory.parse_file(str(path), resolve=True)
    except (ConfigException, ParseBaseException, OSError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return dict(parsed.as_plain_ordered_dict())


def _resolve(
    spec: Field, tree: Mapping[str, Any], path: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> tuple[Any, str]:
    """The winning (value, source) for one setting, the highest layer first."""
    if overrides.get(spec.key) is not None:
        return _cast(spec, spec.cast, overrides[spec.key], CLI_SOURCE), CLI_SOURCE
    for name in spec.env:
        if env.get(name, "").strip():
            return _cast(spec, spec.cast, env[name], f"env:{name}"), f"env:{name}"
    for file_key in spec.file_keys:
        raw = _lookup(tree, file_key)
        if raw is not None and raw != "":
            source = f"file:{path}"
            return _cast(spec, spec.file_casts.get(file_key, spec.cast), raw, f"{source} ({file_key})"), source
    return spec.default, DEFAULT_SOURCE


def _cast(spec: Field, cast: Callable[[Any], Any], raw: Any, source: str) -> Any:
    try:
        return cast(raw)
    except ValueError as exc:
        raise ConfigError(f"setting {spec.key} from {source}: {exc}") from None


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _reject_unknown(overrides: Mapping[str, Any]) -> None:
    unknown = sorted(set(overrides) - _BY_KEY.keys())
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(_BY_KEY)}")


# ClearML's conventions for deriving the files and web servers from the API server's address.
_PORTS = {8008: (8081, 8080)}
_HOST_PREFIX = ("api.", "files.", "app.")


def derive_servers(api_server: str) -> tuple[str, str]:
    """(files_server, web_server) for an API address: :8008 -> :8081/:8080, api.X -> files.X/app.X."""
    parts = urlsplit(api_server)
    host = parts.hostname or ""
    if parts.port in _PORTS:
        files_port, web_port = _PORTS[parts.port]
        return (urlunsplit(parts._replace(netloc=f"{_netloc_host(parts)}:{files_port}")),
                urlunsplit(parts._replace(netloc=f"{_netloc_host(parts)}:{web_port}")))
    if host.startswith(_HOST_PREFIX[0]):
        rest = parts.netloc[len(_HOST_PREFIX[0]):]
        return (urlunsplit(parts._replace(netloc=_HOST_PREFIX[1] + rest)),
                urlunsplit(parts._replace(netloc=_HOST_PREFIX[2] + rest)))
    raise ConfigError(f"cannot derive the files and web servers from {api_server}; "
                      "give --files-server and --web-server")


def _netloc_host(parts) -> str:
    host = parts.hostname or ""
    return f"[{host}]" if ":" in host else host


def _servers_for(api_server: str) -> tuple[str, str]:
    """Unset files/web servers: derived from the API address, else its host on the default ports.
    Never another host than the one configured: a task's results-page link (CLEARML_WEB_HOST)
    must reach the page the person signed in to, where the session cookie applies."""
    try:
        return derive_servers(api_server)
    except ConfigError:
        parts = urlsplit(api_server)
        base = f"{parts.scheme}://{_netloc_host(parts)}"
        return f"{base}:{_PORTS[8008][0]}", f"{base}:{_PORTS[8008][1]}"


def _derive(values: dict[str, Any], home: Path) -> None:
    """Fill defaults that depend on other settings, and expand `~` in paths."""
    if values["api.files_server"] is _DERIVED or values["api.web_server"] is _DERIVED:
        files, web = _servers_for(values["api.api_server"])
        values["api.files_server"] = files if values["api.files_server"] is _DERIVED else values["api.files_server"]
        values["api.web_server"] = web if values["api.web_server"] is _DERIVED else values["api.web_server"]
    if values["agent.worker_name"] is _DERIVED:
        values["agent.worker_name"] = socket.gethostname()
    if values["agent.worker_id"] is _DERIVED:
        values["agent.worker_id"] = f"{values['agent.worker_name']}:0"
    cache_dir = values["agent.cache_dir"]
    for key, leaf in (("agent.venv_cache_dir", "venvs"), ("agent.git_cache_dir", "vcs")):
        if values[key] is _DERIVED:
            values[key] = cache_dir / leaf
    for key, value in values.items():
        if isinstance(value, Path):
            values[key] = _expand(value, home)


def _expand(path: Path, home: Path) -> Path:
    text = str(path)
    if text == "~" or text.startswith("~/"):
        return home / text[2:]
    return path.expanduser()


def _section(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Values under `prefix` one level deep, keyed by their last name."""
    names = {key: key[len(prefix):] for key in values if key.startswith(prefix)}
    return {name: values[key] for key, name in names.items() if "." not in name}


def _agent(values: Mapping[str, Any]) -> AgentSettings:
    docker = DockerSettings(**_section(values, "agent.docker."))
    packages = PackageSettings(**_section(values, "agent.packages."))
    venvs_cache = VenvCacheSettings(**_section(values, "agent.venvs_cache."))
    prepare = PrepareSettings(**_section(values, "agent.prepare."))
    return AgentSettings(**_section(values, "agent."), docker=docker, packages=packages, venvs_cache=venvs_cache,
                         prepare=prepare)


def _unknown_shipyard_keys(tree: Mapping[str, Any]) -> list[str]:
    """Keys under `shipyard { }` that no setting reads: likely typos, reported, not fatal."""
    known = {key for spec in FIELDS for key in spec.file_keys if key.startswith("shipyard.")}
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for name, child in node.items():
            key = f"{prefix}.{name}"
            if key in known:
                continue
            if isinstance(child, Mapping) and any(k.startswith(key + ".") for k in known):
                walk(child, key)
            else:
                found.append(f"unknown key {key} in config file")

    shipyard = tree.get("shipyard")
    if isinstance(shipyard, Mapping):
        walk(shipyard, "shipyard")
    return found


def _masked(spec: Field, value: Any) -> Any:
    if spec.key == "agent.git_credentials":
        return tuple(replace(credential, password=MASK) for credential in value)
    if spec.key.startswith("agent.packages."):
        return envs.masked(spec.key, value, MASK)
    if spec.key == "agent.extra_env":
        return {name: MASK if _SECRET_NAME.search(name) else item for name, item in value.items()}
    if spec.secret and value:
        return MASK
    return value

