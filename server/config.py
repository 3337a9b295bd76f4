"""Server settings: defaults < config file (HOCON) < SHIPYARD_* environment < command line.

Every key is documented in configs/server.conf.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from shipyard.errors import ConfigError


def default_data_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_DATA_DIR") or Path.home() / ".shipyard")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    api_port: int = 8008
    files_port: int = 8081
    web_port: int = 8080
    data_dir: Path = field(default_factory=default_data_dir)
    db: str = ""                      # SQLAlchemy URL; empty = SQLite file in data_dir
    sqlite_synchronous: str = "NORMAL"  # NORMAL survives process crashes; FULL also power loss
    upgrade_db_at_start: str = "auto"   # an older schema at start: auto = upgrade SQLite, refuse PostgreSQL; yes; no
    access_key: str = ""
    secret_key: str = ""
    secret_key_file: str = ""         # read in place of secret_key when set (keeps it off the command line)
    public_host: str = ""             # host name clients should use in URLs (default: host)
    token_ttl_s: int = 30 * 24 * 3600
    long_poll_max_s: float = 60.0
    worker_timeout_s: float = 600.0
    lease_max_attempts: int = 3        # claims of one task before "agent lost N times" fails it
    reaper_interval_s: float = 1.0     # how often expired leases are looked for
    login_failures_per_key: int = 10   # failed sign-ins per access key within login_window_s (0: no limit)
    login_failures_per_address: int = 30  # ... and per client address
    login_window_s: float = 60.0
    files_max_file_mb: int = 16384     # largest single uploaded file; 0 = no limit
    files_max_request_mb: int = 16384  # largest upload request (all its parts); 0 = no limit
    files_min_free_mb: int = 1024      # uploads are refused (507) rather than leave less free disk
    handler_threads: int = 8           # threads that run API handlers off the event loop
    ingest_threads: int = 0            # of those, the most events.add_batch calls hold at once (0: half)
    query_budget_s: float = 5.0        # longest a get_all pattern filter may run before a 400
    header_timeout_s: float = 10.0     # a request's headers must arrive within this
    body_timeout_s: float = 60.0       # longest pause allowed between two pieces of a request body
    shutdown_grace_s: float = 5.0      # SIGTERM: requests get this long to finish, then the process exits
    log_level: str = "info"
    web_ui: str = ""                  # directory of an official ClearML web UI build to serve (--web-ui)
    cors_origins: str = ""            # comma-separated origins allowed to call the API port (CORS); off when empty
    files_backend: str = "local"      # where the files listener keeps files: local (data_dir/files) or s3
    files_s3_bucket: str = ""         # the bucket (files_backend = s3); see docs/storage.md
    files_s3_prefix: str = ""         # keys are <prefix>/<object path>
    files_s3_endpoint_url: str = ""   # MinIO and other S3-compatible stores; empty = AWS
    files_s3_region: str = ""
    files_s3_access_key: str = ""     # empty: boto3's own chain (AWS_* variables, ~/.aws, instance role)
    files_s3_secret_key: str = ""
    files_s3_part_mb: int = 8         # multipart part size: the most an upload holds in memory (>= 5)
    files_s3_retries: int = 2         # quick retries of a failed S3 call before the client gets 503
    files_s3_timeout_s: float = 10.0  # connect timeout of one S3 call (reads: three times this)
    # Fair share (docs/scheduling.md). quotas: "user:ID=2,project:ID=4:no-borrow" (a bare ID is a user);
    # the API's quotas.* entries override these. No quota anywhere: queues are plain FIFO.
    quotas: str = ""
    fair_share_half_life_h: float = 168.0  # GPU-hours used this long ago count half
    fair_default_share: float = 1.0   # weight of an entity without a guarantee in the fair-share order
    preemption: str = "on"            # on: borrowed GPUs are reclaimed for a guarantee; off: never
    preempt_interval_s: float = 2.0   # how often the server looks for guarantees kept waiting by borrowers
    gpu_capacity: int = 0             # GPUs in the pool; 0 = what the live workers report
    # Replicas on one PostgreSQL (docs/replicas.md)
    token_secret: str = ""            # token/session signing secret shared by replicas (empty: kept in the database)
    token_secret_previous: str = ""   # comma-separated older secrets still accepted (a rotation in progress)
    token_secret_file: str = ""       # read in place of token_secret when set (line 1: current; more lines: previous)
    replica_name: str = ""            # this replica's name on /metrics and in logs (default host:api_port)
    db_pool_size: int = 16            # PostgreSQL connections a replica keeps open
    db_max_overflow: int = 32         # ... and may open beyond that under load
    db_pool_timeout_s: float = 10.0   # longest a request waits for a free connection (then 503)
    db_statement_timeout_s: float = 30.0  # PostgreSQL statement_timeout for API connections (0: none)
    notify_recheck_s: float = 30.0    # long-polls re-check this often even when LISTEN/NOTIFY is up
    leader_check_s: float = 1.0       # how often a non-leader replica tries to become the leader

    @property
    def cors_origin_set(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip())

    @property
    def upgrade_at_start(self) -> bool:
        """Whether a start may upgrade an older schema. auto: yes for SQLite (the data dir is this
        process's alone), no for PostgreSQL (replicas of an older release may share it: an operator
        upgrades once with `shipyard server --upgrade-db`, after a pg_dump)."""
        choice = self.upgrade_db_at_start.strip().lower()
        if choice not in ("auto", "yes", "no"):
            raise ConfigError(f"server setting 'upgrade_db_at_start' must be auto, yes or no, got {choice!r}")
        return choice == "yes" or (choice == "auto" and self.db_url.startswith("sqlite"))

    @property
    def token_secrets(self) -> list[str]:
        """The configured signing secrets, current first (empty: the database's own)."""
        previous = [x.strip() for x in self.token_secret_previous.split(",") if x.strip()]
        return [self.token_secret, *previous] if self.token_secret else []

    @property
    def replica(self) -> str:
        return self.replica_name or f"{socket.gethostname()}:{self.api_port}"

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{Path(self.data_dir) / 'shipyard.db'}"

    def url(self, port: int) -> str:
        """The one address clients are given for a listener: the banner, the clearml.conf `shipyard up`
        writes and the web page all use it, so the SDK's task links land where the person signed in
        (the session cookie is per host). public_host, else the listening host (localhost for a
        loopback or any-address one)."""
        host = self.public_host or ("localhost" if self.host in ("0.0.0.0", "127.0.0.1", "::", "::1") else self.host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


_ENV = {f.name: f"SHIPYARD_{f.name.upper()}" for f in fields(ServerConfig)}
_ENV["db"] = "SHIPYARD_DB"


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = {f.name: f.type for f in fields(ServerConfig)}[name]
    if isinstance(value, list):  # a HOCON list (cors_origins = [...]): the comma-separated form
        value = ",".join(str(v) for v in value)
    try:
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
        if kind in ("Path", Path):
            return Path(str(value)).expanduser()
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"server setting '{name}' from {source} must be {kind}, got {value!r}") from None


def _from_file(path: Path) -> dict[str, Any]:
    from pyhocon import ConfigFactory
    from pyhocon.exceptions import ConfigException

    try:
        tree = ConfigFactory.parse_file(str(path))
    except (OSError, ConfigException) as exc:
        raise ConfigError(f"cannot read server config {path}: {exc}") from None
    section = tree.get("server", tree)
    return {k: section.get(k) for k in _ENV if k in section}


def load_server_config(config_file: Path | None = None, env: Mapping[str, str] | None = None,
                       overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = config_file or (Path(env["SHIPYARD_SERVER_CONFIG"]) if env.get("SHIPYARD_SERVER_CONFIG") else None)
    if path:
        values.update({k: _coerce(k, v, f"file:{path}") for k, v in _from_file(path).items()})
        sources.update(dict.fromkeys(values, f"file:{path}"))
    for name, var in _ENV.items():
        if env.get(var):
            values[name] = _coerce(name, env[var], f"env:{var}")
            sources[name] = f"env:{var}"
    for name, value in (overrides or {}).items():
        if value is not None and value != "":
            values[name] = _coerce(name, value, "cli")
            sources[name] = "cli"
    if values.get("secret_key_file"):
        values["secret_key"] = _read_secret(Path(values["secret_key_file"]).expanduser())
    if values.get("token_secret_file"):
        lines = _read_lines(Path(values["token_secret_file"]).expanduser(), "token_secret_file")
        values["token_secret"], values["token_secret_previous"] = lines[0], ",".join(lines[1:])
    config = replace(ServerConfig(), **values)
    _check_files_backend(config, sources)
    parse_quotas(config.quotas)
    if config.preemption not in ("on", "off"):
        raise ConfigError(f"server setting 'preemption' must be on or off, got {config.preemption!r}")
    if any(len(secret) < 32 for secret in config.token_secrets):
        raise ConfigError("token_secret and token_secret_previous: each secret must be at least 32 characters "
                          "(e.g. `openssl rand -hex 32`)")
    return config


def _check_files_backend(config: ServerConfig, sources: Mapping[str, str]) -> None:
    """The files store's settings make sense together; an error names the setting and its source."""
    def where(name: str) -> str:
        return f"server setting '{name}' (from {sources.get(name, 'default')})"

    if config.files_backend not in ("local", "s3"):
        raise ConfigError(f"{where('files_backend')} must be 'local' or 's3', got {config.files_backend!r}")
    if config.files_backend == "s3" and not config.files_s3_bucket:
        raise ConfigError(f"{where('files_backend')} is 's3', so files_s3_bucket (SHIPYARD_FILES_S3_BUCKET) "
                          "must name the bucket")
    if bool(config.files_s3_access_key) != bool(config.files_s3_secret_key):
        raise ConfigError(f"{where('files_s3_access_key')} and {where('files_s3_secret_key')} go together: "
                          "set both, or neither to use boto3's credential chain")
    if config.files_s3_part_mb < 5:
        raise ConfigError(f"{where('files_s3_part_mb')} must be at least 5 (S3's smallest multipart part)")


def parse_quotas(text: str) -> dict[str, tuple[int, bool]]:
    """The `quotas` setting: {entity: (guaranteed GPUs, may borrow)}; entity "user:ID" or "project:ID"."""
    out: dict[str, tuple[int, bool]] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        entity, _, value = item.partition("=")
        gpus, _, flag = value.partition(":")
        entity = entity.strip() if ":" in entity else f"user:{entity.strip()}"
        if not entity.split(":", 1)[1] or not gpus.strip().isdigit() or flag not in ("", "borrow", "no-borrow"):
            raise ConfigError(f"server setting 'quotas': {item!r} is not ENTITY=GPUS[:borrow|:no-borrow] "
                              "(ENTITY: user:ID, project:ID or a bare user ID)")
        if not entity.startswith(("user:", "project:")):
            raise ConfigError(f"server setting 'quotas': entity {entity!r} must start with user: or project:")
        out[entity] = (int(gpus), flag != "no-borrow")
    return out


def _read_secret(path: Path) -> str:
    """The admin secret from a file of its own (first line, surrounding blanks dropped)."""
    return _read_lines(path, "secret_key_file")[0]


def _read_lines(path: Path, setting: str) -> list[str]:
    """A secrets file's non-blank lines, stripped (at least one)."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {setting} {path}: {exc}") from None
    if not lines:
        raise ConfigError(f"{setting} {path} is empty")
    return lines
