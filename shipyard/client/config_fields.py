"""The table of settings that shipyard/client/config.py resolves: one `Field` a setting.

    Field                        a setting's dotted key, cast, default, file keys, env vars, secrecy
    FIELDS                       every setting, in the order `shipyard config` lists them; where a
                                 setting has several names in one layer, the first listed wins
    _DERIVED                     the default of a setting computed from others (config._derive)
    _BY_KEY                      FIELDS by dotted key (unknown override keys are refused)
    DEFAULT_DOCKER_ALLOWED_ARGS  agent.docker.allowed_args' default

The casts are config_values.py; the package and env-cache groups' casts are config_envs.py.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shipyard.client import config_envs as envs
from shipyard.client.config_envs import PackageSettings
from shipyard.client.config_values import (
    _args,
    _bool,
    _credentials,
    _optional_path,
    _optional_seconds,
    _optional_text,
    _package_manager,
    _path,
    _patterns,
    _positive_int,
    _positive_seconds,
    _seconds,
    _text,
    _text_list,
    _text_map,
    _url,
    _uv_from_package_manager,
)

DEFAULT_DOCKER_ALLOWED_ARGS = (
    "--env", "--label", "--shm-size", "--memory", "--memory-swap", "--cpus", "--cpu-shares",
    "--cpuset-cpus", "--ulimit", "--pids-limit", "--tmpfs",
)
"""`docker run` options a task may ask for in its container arguments (docs/docker.md). An entry
is an option (any value) or `option=value` (only that value, e.g. `--ipc=host`)."""


# --- the table of settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One setting: its dotted key, cast, default and its names in the file and environment."""

    key: str
    cast: Callable[[Any], Any]
    default: Any
    file_keys: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    secret: bool = False
    file_casts: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)


_DERIVED = object()  # default computed from other settings in `_derive`

FIELDS: tuple[Field, ...] = (
    Field("api.api_server", _url, "http://localhost:8008", ("api.api_server",), ("CLEARML_API_HOST",)),
    Field("api.files_server", _url, _DERIVED, ("api.files_server",), ("CLEARML_FILES_HOST",)),
    Field("api.web_server", _url, _DERIVED, ("api.web_server",), ("CLEARML_WEB_HOST",)),
    Field("api.access_key", _text, "", ("api.credentials.access_key",), ("CLEARML_API_ACCESS_KEY",)),
    Field("api.secret_key", _text, "", ("api.credentials.secret_key",), ("CLEARML_API_SECRET_KEY",), secret=True),
    Field("api.verify_ssl", _bool, True, ("api.verify_certificate",), ("CLEARML_API_HOST_VERIFY_CERT",)),
    Field("agent.worker_name", _text, _DERIVED, ("agent.worker_name",), ("CLEARML_WORKER_NAME",)),
    Field("agent.worker_id", _text, _DERIVED, ("agent.worker_id",), ("CLEARML_WORKER_ID",)),
    Field("agent.queues", _text_list, (), ("shipyard.queues",), ("SHIPYARD_QUEUES",)),
    Field(
        "agent.poll_interval_s", _positive_seconds, 5.0, ("shipyard.poll_interval_s",),
        ("SHIPYARD_POLL_INTERVAL_S", "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC"),
    ),
    Field("agent.long_poll_s", _seconds, 30.0, ("shipyard.long_poll_s",), ("SHIPYARD_LONG_POLL_S",)),
    Field(
        "agent.status_report_s", _positive_seconds, 30.0, ("shipyard.status_report_s",),
        ("SHIPYARD_STATUS_REPORT_S", "CLEARML_AGENT_STATUS_REPORT_FREQ_SEC"),
    ),
    Field(
        "agent.ping_s", _positive_seconds, 60.0, ("shipyard.ping_s", "agent.task_ping_interval_sec"),
        ("SHIPYARD_PING_S",),
    ),
    Field("agent.log_batch_ms", _positive_int, 200, ("shipyard.log_batch_ms",), ("SHIPYARD_LOG_BATCH_MS",)),
    Field(
        "agent.log_batch_bytes", _positive_int, 256 * 1024, ("shipyard.log_batch_bytes",),
        ("SHIPYARD_LOG_BATCH_BYTES",),
    ),
    Field("agent.abort_grace_s", _seconds, 10.0, ("shipyard.abort_grace_s",), ("SHIPYARD_ABORT_GRACE_S",)),
    Field("agent.max_runtime_s", _optional_seconds, None, ("shipyard.max_runtime_s",), ("SHIPYARD_MAX_RUNTIME_S",)),
    Field("agent.queue_max_runtime_s", _text_map, MappingProxyType({}), ("shipyard.queue_max_runtime_s",),
          ("SHIPYARD_QUEUE_MAX_RUNTIME_S",)),
    Field("agent.lease_s", _positive_seconds, 60.0, ("shipyard.lease_s",), ("SHIPYARD_LEASE_S",)),
    Field("agent.task_key_ttl_s", _positive_seconds, 24 * 3600.0, ("shipyard.task_key_ttl_s",),
          ("SHIPYARD_TASK_KEY_TTL_S",)),
    Field(
        "agent.work_dir", _path, Path("~/.shipyard/work"), ("shipyard.work_dir", "agent.venvs_dir"),
        ("SHIPYARD_WORK_DIR",),
    ),
    Field("agent.cache_dir", _path, Path("~/.shipyard/cache"), ("shipyard.cache_dir",), ("SHIPYARD_CACHE_DIR",)),
    Field(
        "agent.venv_cache_dir", _path, _DERIVED, ("shipyard.venv_cache_dir", "agent.venvs_cache.path"),
        ("SHIPYARD_VENV_CACHE_DIR", "CLEARML_AGENT_VENV_CACHE_PATH"),
    ),
    Field(
        "agent.git_cache_dir", _path, _DERIVED, ("shipyard.git_cache_dir", "agent.vcs_cache.path"),
        ("SHIPYARD_GIT_CACHE_DIR",),
    ),
    Field(
        "agent.python_binary", _optional_text, None, ("shipyard.python_binary", "agent.python_binary"),
        ("SHIPYARD_PYTHON_BINARY",),
    ),
    Field(
        "agent.package_manager_type", _package_manager, "pip",
        ("shipyard.package_manager_type", "agent.package_manager.type"), ("SHIPYARD_PACKAGE_MANAGER_TYPE",),
    ),
    Field(
        "agent.force_repo_requirements", _bool, False,
        ("shipyard.force_repo_requirements", "agent.package_manager.force_repo_requirements_txt"),
        ("SHIPYARD_FORCE_REPO_REQUIREMENTS",),
    ),
    Field(
        "agent.python_version_strict", _bool, False,
        ("shipyard.python_version_strict", "agent.python_version_strict"), ("SHIPYARD_PYTHON_VERSION_STRICT",),
    ),
    Field(
        "agent.uv_enabled", _bool, True, ("shipyard.uv_enabled", "agent.package_manager.type"),
        ("SHIPYARD_UV_ENABLED",), file_casts={"agent.package_manager.type": _uv_from_package_manager},
    ),
    Field("agent.git_user", _optional_text, None, ("agent.git_user",), ("CLEARML_AGENT_GIT_USER",)),
    Field("agent.git_pass", _optional_text, None, ("agent.git_pass",), ("CLEARML_AGENT_GIT_PASS",), secret=True),
    Field(
        "agent.git_credentials", _credentials, (), ("shipyard.git_credentials",), ("SHIPYARD_GIT_CREDENTIALS",),
        secret=True,
    ),
    Field("agent.redact_patterns", _patterns, (), ("shipyard.redact_patterns",), ("SHIPYARD_REDACT_PATTERNS",)),
    Field("agent.extra_env", _text_map, MappingProxyType({}), ("shipyard.extra_env",), ("SHIPYARD_EXTRA_ENV",)),
    Field("agent.task_user", _optional_text, None, ("shipyard.task_user",), ("SHIPYARD_TASK_USER",)),
    Field("agent.preempt_signal", _text, "SIGUSR1", ("shipyard.preempt_signal",), ("SHIPYARD_PREEMPT_SIGNAL",)),
    Field("agent.preempt_grace_s", _seconds, 30.0, ("shipyard.preempt_grace_s",), ("SHIPYARD_PREEMPT_GRACE_S",)),
    Field("agent.queue_preempt_grace_s", _text_map, MappingProxyType({}), ("shipyard.queue_preempt_grace_s",),
          ("SHIPYARD_QUEUE_PREEMPT_GRACE_S",)),
    Field("agent.gpu_pack_margin_mb", _positive_int, 1024, ("shipyard.gpu_pack_margin_mb",),
          ("SHIPYARD_GPU_PACK_MARGIN_MB",)),
    Field("agent.foreign_gpu_idle_s", _seconds, 300.0, ("shipyard.foreign_gpu_idle_s",),
          ("SHIPYARD_FOREIGN_GPU_IDLE_S",)),
    Field("agent.queue_idle_gpu", _text_map, MappingProxyType({}), ("shipyard.queue_idle_gpu",),
          ("SHIPYARD_QUEUE_IDLE_GPU",)),
    Field("agent.packages.pytorch_resolve", envs.pytorch_resolve, "pip",
          ("agent.package_manager.pytorch_resolve",),
          ("SHIPYARD_PYTORCH_RESOLVE", "CLEARML_AGENT_PACKAGE_PYTORCH_RESOLVE")),
    Field("agent.packages.torch_indexes", envs.torch_indexes, PackageSettings().torch_indexes,
          ("agent.package_manager.torch_indexes",), ("SHIPYARD_TORCH_INDEXES",)),
    Field("agent.packages.extra_index_urls", envs.index_urls, (),
          ("agent.package_manager.extra_index_url",), ("SHIPYARD_EXTRA_INDEX_URLS",)),
    Field("agent.packages.index_credentials", envs.index_credentials, (), ("shipyard.index_credentials",),
          ("SHIPYARD_INDEX_CREDENTIALS",), secret=True),
    Field("agent.packages.trusted_hosts", envs.hosts, (),
          ("agent.package_manager.trusted_hosts", "agent.package_manager.trusted_host"),
          ("SHIPYARD_TRUSTED_HOSTS",)),
    Field("agent.venvs_cache.shared_path", _optional_path, None,
          ("agent.venvs_cache.shared_path",), ("SHIPYARD_VENV_SHARED_CACHE",)),
    Field("agent.venvs_cache.max_entries", envs.optional_count, None,
          ("agent.venvs_cache.max_entries",), ("SHIPYARD_VENV_CACHE_MAX_ENTRIES",)),
    Field("agent.venvs_cache.max_size_gb", envs.optional_gb, None, ("agent.venvs_cache.max_size_gb",),
          ("SHIPYARD_VENV_CACHE_MAX_SIZE_GB",)),
    Field("agent.venvs_cache.free_space_threshold_gb", envs.gb, 0.0,
          ("agent.venvs_cache.free_space_threshold_gb",),
          ("SHIPYARD_VENV_CACHE_FREE_SPACE_GB",)),
    Field("agent.prepare.enabled", _bool, True, ("shipyard.prepare.enabled",), ("SHIPYARD_PREPARE",)),
    Field("agent.prepare.while_busy", _bool, True, ("shipyard.prepare.while_busy",),
          ("SHIPYARD_PREPARE_WHILE_BUSY",)),
    Field("agent.prepare.max_load", envs.load, 1.0, ("shipyard.prepare.max_load",), ("SHIPYARD_PREPARE_MAX_LOAD",)),
    Field("agent.prepare.depth", _positive_int, 3, ("shipyard.prepare.depth",), ("SHIPYARD_PREPARE_DEPTH",)),
    Field("agent.prepare.interval_s", _positive_seconds, 2.0, ("shipyard.prepare.interval_s",),
          ("SHIPYARD_PREPARE_INTERVAL_S",)),
    Field("agent.docker.enabled", _bool, False, ("shipyard.docker.enabled",), ("SHIPYARD_DOCKER",)),
    Field(
        "agent.docker.default_image", _optional_text, None,
        ("shipyard.docker.default_image", "agent.default_docker.image"), ("SHIPYARD_DOCKER_DEFAULT_IMAGE",),
    ),
    Field(
        "agent.docker.default_args", _args, (),
        ("shipyard.docker.default_args", "agent.default_docker.arguments"), ("SHIPYARD_DOCKER_DEFAULT_ARGS",),
    ),
    Field(
        "agent.docker.extra_args", _args, (), ("shipyard.docker.extra_args", "agent.extra_docker_arguments"),
        ("SHIPYARD_DOCKER_EXTRA_ARGS", "CLEARML_AGENT_EXTRA_DOCKER_ARGS"),
    ),
    Field(
        "agent.docker.allowed_args", _text_list, DEFAULT_DOCKER_ALLOWED_ARGS, ("shipyard.docker.allowed_args",),
        ("SHIPYARD_DOCKER_ALLOWED_ARGS",),
    ),
    Field("agent.docker.user", _optional_text, None, ("shipyard.docker.user",), ("SHIPYARD_DOCKER_USER",)),
    Field("agent.docker.network", _text, "host", ("shipyard.docker.network",), ("SHIPYARD_DOCKER_NETWORK",)),
    Field(
        "agent.docker.force_pull", _bool, False, ("shipyard.docker.force_pull", "agent.docker_force_pull"),
        ("SHIPYARD_DOCKER_FORCE_PULL",),
    ),
    Field("agent.docker.init", _bool, True, ("shipyard.docker.init",), ("SHIPYARD_DOCKER_INIT",)),
    Field("agent.docker.uv_binary", _optional_path, None, ("shipyard.docker.uv_binary",),
          ("SHIPYARD_DOCKER_UV_BINARY",)),
    Field("agent.docker.ca_bundle", _optional_path, None, ("shipyard.docker.ca_bundle",),
          ("SHIPYARD_DOCKER_CA_BUNDLE", "SSL_CERT_FILE")),
)
_BY_KEY = {spec.key: spec for spec in FIELDS}
