"""The right PyTorch build for this machine's GPU driver, and the agent's extra package indexes.

    choice = choose_torch_index(cuda="12.2", indexes={"cu118": URL, "cu121": URL, "cpu": URL})
    reqs, choice = resolve_torch(requirements, mode="pip", cuda="12.2", indexes=...)
    reqs = with_extra_indexes(reqs, ["https://pypi.example.com/simple"])

PyTorch publishes one package index per CUDA version (download.pytorch.org/whl/cu121, ...),
each holding wheels with a local version label (`torch-2.5.0+cu121`). A task recorded on a
laptop asks for `torch==2.5.0` (or `torch==2.5.0+cu118`); the worker must install the build its
driver can run. ClearML's `agent.package_manager.pytorch_resolve` names the mode:

    pip     (default) add the index for the driver's CUDA as an extra index; the installer picks
            the wheel from it (uv prefers the extra index for a package it holds)
    direct  the same here: the chosen index is the one the wheel comes from
    none    install torch like any other package

The index is picked from a map of variant -> URL: the variant matching the driver's CUDA
version exactly, else the newest older one (a driver runs wheels built for an older CUDA, never
for a newer one), else `cpu`; no GPU (cuda None) picks `cpu`. A pinned local label
(`torch==2.5.0+cu118`) is dropped so the chosen index's build satisfies the pin. Everything
here is pure: the caller logs `choice.why` and puts `choice.cache_key()` into the environment
cache key.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote, urlsplit, urlunsplit

from sandbox.requirements import Kind, Requirement, RequirementSet, parse_line
from shipyard.indexes import DEFAULT_TORCH_INDEXES, MODES, strip_credentials, url_credentials, variant_cuda

__all__ = ["DEFAULT_TORCH_INDEXES", "MODES", "TorchChoice", "choose_torch_index", "resolve_torch", "strip_credentials",
           "url_credentials", "variant_cuda", "wants_torch", "with_credentials", "with_extra_indexes"]

TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")
CPU = "cpu"
_LOCAL_LABEL = re.compile(r"(==\s*[^,;\s+]+)\+[A-Za-z0-9.]+")


@dataclass(frozen=True)
class TorchChoice:
    variant: str
    """The map's key: cu121, cpu..."""
    url: str
    why: str
    """One sentence for the console: which index and why."""

    def cache_key(self) -> str:
        return f"torch-index={self.variant} {strip_credentials(self.url)}"


def parse_cuda(version: str) -> tuple[int, int]:
    """`12.4` / `12.4.1` -> (12, 4); ValueError otherwise."""
    parts = version.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise ValueError(f"not a CUDA version: {version!r}")
    return int(parts[0]), int(parts[1])


def choose_torch_index(cuda: str | None, indexes: Mapping[str, str]) -> TorchChoice | None:
    """The index for a driver supporting CUDA `cuda` (None: no GPU); None when the map has none."""
    if cuda is None:
        return _cpu(indexes, "no NVIDIA GPU on this machine")
    driver = parse_cuda(cuda)
    usable = sorted(((v, variant) for variant in indexes if (v := variant_cuda(variant)) and v <= driver),
                    reverse=True)
    if not usable:
        return _cpu(indexes, f"no index in the map is built for CUDA {cuda} or older")
    version, variant = usable[0]
    if version == driver:
        why = f"the driver supports CUDA {cuda}, and the map has an index built for it"
    else:
        why = (f"the driver supports CUDA {cuda}; the map has no index built for it, so the newest one "
               f"for an older CUDA ({version[0]}.{version[1]}), which the driver runs")
    return TorchChoice(variant, indexes[variant], f"torch from index {variant} ({strip_credentials(indexes[variant])}): {why}")


def _cpu(indexes: Mapping[str, str], reason: str) -> TorchChoice | None:
    if CPU not in indexes:
        return None
    return TorchChoice(CPU, indexes[CPU], f"torch from index cpu ({strip_credentials(indexes[CPU])}): {reason}")


def wants_torch(requirements: RequirementSet) -> bool:
    return any(r.name in TORCH_PACKAGES and r.kind is Kind.NAMED for r in requirements.requirements)


def resolve_torch(requirements: RequirementSet, *, mode: str, cuda: str | None,
                  indexes: Mapping[str, str]) -> tuple[RequirementSet, TorchChoice | None, str]:
    """(requirements with the chosen index, the choice, a line for the console; "" when nothing to say)."""
    if mode == "none" or not wants_torch(requirements):
        return requirements, None, ""
    choice = choose_torch_index(cuda, indexes)
    if choice is None:
        known = ", ".join(sorted(indexes)) or "none"
        return requirements, None, (f"torch left to the default index: no index fits CUDA {cuda or '(no GPU)'} "
                                    f"in the torch index map (variants: {known})")
    relabelled = tuple(_without_local_label(r) for r in requirements.requirements)
    reqs = with_extra_indexes(replace(requirements, requirements=relabelled), [choice.url])
    return reqs, choice, choice.why


def _without_local_label(req: Requirement) -> Requirement:
    """`torch==2.5.0+cu118` -> `torch==2.5.0`: the chosen index decides the build."""
    if req.kind is not Kind.NAMED or req.name not in TORCH_PACKAGES or "+" not in req.line:
        return req
    return parse_line(_LOCAL_LABEL.sub(r"\1", req.line))


def with_extra_indexes(requirements: RequirementSet, urls: Sequence[str]) -> RequirementSet:
    """Add `--extra-index-url` lines (credentials left out: they are not part of the cache key
    and must never be logged; the builder adds them back when it writes the install file)."""
    present = {r.line for r in requirements.requirements if r.kind is Kind.OPTION}
    added = []
    for url in urls:
        line = f"--extra-index-url {strip_credentials(url).rstrip('/')}"
        if line not in present:
            present.add(line)
            added.append(parse_line(line))
    return replace(requirements, requirements=tuple(added) + requirements.requirements) if added else requirements


def with_credentials(lines: Sequence[str], credentials: Mapping[str, tuple[str, str]]) -> list[str]:
    """Index option lines with the credentials for their host written into the URL (host or
    host:port keys), for the install file the builder writes and deletes; other lines unchanged."""
    if not credentials:
        return list(lines)
    return [_credited(line, credentials) for line in lines]


def _credited(line: str, credentials: Mapping[str, tuple[str, str]]) -> str:
    option, _, url = line.partition(" ")
    if option not in ("--index-url", "--extra-index-url", "--find-links") or "://" not in url:
        return line
    parts = urlsplit(url.strip())
    if "@" in parts.netloc:
        return line
    found = credentials.get(parts.netloc) or credentials.get(parts.hostname or "")
    if found is None:
        return line
    user, password = (quote(found[0], safe=""), quote(found[1], safe=""))
    return f"{option} {urlunsplit(parts._replace(netloc=f'{user}:{password}@{parts.netloc}'))}"
