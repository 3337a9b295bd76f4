"""Settings for building task environments: package indexes, the torch index map, the env cache.

Read by shipyard/client/config.py (which owns the lookup, layers and provenance); this module
holds the two setting groups and their casts, so the table (config_fields.py) stays one line per setting:

    agent.packages.pytorch_resolve     pip | direct | none   (agent.package_manager.pytorch_resolve)
    agent.packages.torch_indexes       {cu121: URL, ..., cpu: URL}
    agent.packages.extra_index_urls    [URL, ...]            (agent.package_manager.extra_index_url)
    agent.packages.index_credentials   [{host, user, password}, ...]
    agent.packages.trusted_hosts       [host, ...]           (agent.package_manager.trusted_host(s))
    agent.venvs_cache.shared_path      a directory shared by the cluster's workers (NFS)
    agent.venvs_cache.max_entries      (agent.venvs_cache.max_entries)
    agent.venvs_cache.max_size_gb
    agent.venvs_cache.free_space_threshold_gb   (agent.venvs_cache.free_space_threshold_gb)
    agent.prepare.enabled              build queued tasks' environments ahead of pickup (on)
    agent.prepare.while_busy           also while this daemon runs a task (on; niced, one build)
    agent.prepare.max_load             skip while the load average per CPU is above this (0: never)
    agent.prepare.depth                tasks looked at from the head of each queue
    agent.prepare.interval_s           how often the queues' heads are read

docs/environments-gpu.md describes them for people; docs/environments.md the prepare keys.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shipyard.indexes import DEFAULT_TORCH_INDEXES, MODES, url_credentials, variant_cuda

_HOST = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")


@dataclass(frozen=True)
class IndexCredential:
    host: str
    """host or host:port of the index, as in its URL."""
    user: str
    password: str


@dataclass(frozen=True)
class PackageSettings:
    pytorch_resolve: str = "pip"
    torch_indexes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(dict(DEFAULT_TORCH_INDEXES)))
    extra_index_urls: tuple[str, ...] = ()
    index_credentials: tuple[IndexCredential, ...] = ()
    trusted_hosts: tuple[str, ...] = ()

    def credentials_by_host(self) -> dict[str, tuple[str, str]]:
        """host -> (user, password): the configured entries, then credentials written into URLs."""
        found = {c.host: (c.user, c.password) for c in self.index_credentials}
        for url in (*self.extra_index_urls, *self.torch_indexes.values()):
            written = url_credentials(url)
            if written is not None:
                found.setdefault(written[0], (written[1], written[2]))
        return found

    def secrets(self) -> list[str]:
        return [password for _user, password in self.credentials_by_host().values() if password]


@dataclass(frozen=True)
class VenvCacheSettings:
    shared_path: Path | None = None
    max_entries: int | None = None
    max_size_gb: float | None = None
    free_space_threshold_gb: float = 0.0

    @property
    def limited(self) -> bool:
        return bool(self.max_entries or self.max_size_gb or self.free_space_threshold_gb > 0)


@dataclass(frozen=True)
class PrepareSettings:
    """Prepare while queued (agent/daemon/prepare.py)."""
    enabled: bool = True
    while_busy: bool = True
    max_load: float = 1.0
    depth: int = 3
    interval_s: float = 2.0


# --- casts (ValueError on bad input; config.py names the setting and its source) -------------


def _decoded(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
    return value


def pytorch_resolve(value: Any) -> str:
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {value!r}")
    return mode


def index_url(value: Any) -> str:
    url = str(value).strip()
    if not re.match(r"^(https?|file)://\S+$", url):
        raise ValueError(f"expected an http(s) or file URL, got {_shown(url)!r}")
    return url


def index_urls(value: Any) -> tuple[str, ...]:
    value = _decoded(value)
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected a list of URLs")
    return tuple(index_url(item) for item in items if str(item).strip())


def torch_indexes(value: Any) -> Mapping[str, str]:
    mapping = _decoded(value)
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError("expected an object of variant: URL, e.g. {cu121: URL, cpu: URL}")
    for variant in mapping:
        if variant != "cpu" and variant_cuda(str(variant)) is None:
            raise ValueError(f"variant {variant!r} is not cpu or cuXYZ (cu118, cu121, cu124...)")
    return MappingProxyType({str(variant): index_url(url) for variant, url in mapping.items()})


def index_credentials(value: Any) -> tuple[IndexCredential, ...]:
    entries = _decoded(value)
    if not isinstance(entries, (list, tuple)):
        raise ValueError("expected a list of {host, user, password}")
    found = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not {"host", "user", "password"} <= entry.keys():
            raise ValueError("each entry needs host, user and password")
        found.append(IndexCredential(str(entry["host"]).strip(), str(entry["user"]), str(entry["password"])))
    return tuple(found)


def hosts(value: Any) -> tuple[str, ...]:
    value = _decoded(value)
    items = re.split(r"[\s,]+", value) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected a list of host names")
    found = tuple(str(item).strip() for item in items if str(item).strip())
    for host in found:
        if not _HOST.match(host):
            raise ValueError(f"{host!r} is not a host name (host or host:port)")
    return found


def optional_count(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    number = float(str(value))
    if number != int(number) or number < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return int(number) or None


def optional_gb(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None
    number = float(str(value))
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number or None


def load(value: Any) -> float:
    number = float(str(value))
    if number < 0:
        raise ValueError(f"must not be negative, got {number}")
    return number


def gb(value: Any) -> float:
    return max(0.0, float(str(value)))   # ClearML: 0 or negative switches the check off


def masked(key: str, value: Any, mask: str) -> Any:
    """A value as `shipyard config` shows it: passwords, and credentials in URLs, masked."""
    if key == "agent.packages.index_credentials":
        return tuple(IndexCredential(c.host, c.user, mask) for c in value)
    if key == "agent.packages.extra_index_urls":
        return tuple(_masked_url(url, mask) for url in value)
    if key == "agent.packages.torch_indexes":
        return {variant: _masked_url(url, mask) for variant, url in value.items()}
    return value


def _masked_url(url: str, mask: str) -> str:
    written = url_credentials(url)
    return url.replace(f":{written[2]}@", f":{mask}@", 1) if written and written[2] else url


def _shown(url: str) -> str:
    written = url_credentials(url)
    return url.replace(written[2], "***") if written and written[2] else url
