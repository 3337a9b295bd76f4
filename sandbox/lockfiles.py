"""Lock files as pinned, hash-checked requirements, and which source a task's environment uses.

    kind = classify_file(Path("poetry.lock"))               -> SourceKind.POETRY_LOCK
    reqs = poetry_lock(lock_text, pyproject_text)            -> RequirementSet (main group, hashes)
    reqs = pipfile_lock(lock_text)                           -> RequirementSet ("default" section)
    reqs = exported_lock(uv_export_text, project_dir)        -> RequirementSet (uv.lock via `uv export`)
    pick = choose(recorded, PackageManager.PIP, force_repo=False, found=[...]) -> SourceFile | None

Every reader returns the lock's packages as `name==version --hash=sha256:...` lines; when every
package line carries hashes, `--require-hashes` is added, so uv and pip refuse any file whose
digest is not in the lock. The cache key is the set's canonical text: the resolved lock.

Precedence (`choose`, ClearML's rule): the task's recorded packages, unless there are none or
agent.package_manager.force_repo_requirements_txt is set; with package manager `poetry` a
poetry.lock, with `uv` a uv.lock, wins over the recorded packages (clearml-agent installs those
projects with their own tool and ignores the recorded list). Among repository files:
uv.lock, poetry.lock, Pipfile.lock, requirements*.txt with hashes, requirements.txt,
pyproject.toml [project].dependencies.

Pure: text in, RequirementSet out. Reading the files and running uv is sandbox/envsource.py.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from sandbox.requirements import RequirementSet, parse_requirements
from shipyard.errors import RequirementsError

try:
    import tomllib  # type: ignore[import-not-found, unused-ignore]  # stdlib from 3.11; mypy checks as 3.10
except ModuleNotFoundError:  # Python 3.10: poetry.lock cannot be read
    tomllib = None  # type: ignore[assignment, unused-ignore]  # a module name rebound to None on 3.10


class PackageManager(str, Enum):
    """agent.package_manager.type, with clearml-agent's words."""

    PIP = "pip"
    UV = "uv"
    POETRY = "poetry"
    CONDA = "conda"


class SourceKind(str, Enum):
    """Repository files an environment can come from, in the order they are preferred."""

    UV_LOCK = "uv.lock"
    POETRY_LOCK = "poetry.lock"
    PIPFILE_LOCK = "Pipfile.lock"
    HASHED_REQUIREMENTS = "requirements with hashes"
    REQUIREMENTS = "requirements.txt"
    PYPROJECT = "pyproject.toml"


ORDER = tuple(SourceKind)

_MANAGER_LOCK = {PackageManager.UV: SourceKind.UV_LOCK, PackageManager.POETRY: SourceKind.POETRY_LOCK}

CONDA_UNSUPPORTED = (
    "agent.package_manager.type is 'conda', which Shipyard does not support: "
    "use 'uv' or 'pip', or run the task in a Docker image that has the conda environment"
)

_HASH_IN_FILE = re.compile(r"--hash[=\s]+\w+:[0-9a-fA-F]+")


@dataclass(frozen=True)
class SourceFile:
    kind: SourceKind
    path: Path


def classify_file(path: Path, text: str | None = None) -> SourceKind | None:
    """What a repository file is, as an environment source (None: not one)."""
    name = path.name
    if name in ("uv.lock", "poetry.lock", "Pipfile.lock", "pyproject.toml"):
        return SourceKind(name)
    if name.startswith("requirements") and name.endswith(".txt"):
        if text is not None and _HASH_IN_FILE.search(text):
            return SourceKind.HASHED_REQUIREMENTS
        return SourceKind.REQUIREMENTS if name == "requirements.txt" else None
    return None


def choose(recorded: bool, manager: PackageManager, *, force_repo: bool,
           found: Sequence[SourceFile]) -> SourceFile | None:
    """The repository file to build from, or None for the task's recorded packages."""
    if manager is PackageManager.CONDA:
        raise RequirementsError(CONDA_UNSUPPORTED, kind="package_manager_unsupported")
    ranked = sorted(found, key=lambda f: ORDER.index(f.kind))
    own_lock = _MANAGER_LOCK.get(manager)
    preferred = [f for f in ranked if f.kind is own_lock]
    if preferred:
        return preferred[0]
    if recorded and not force_repo:
        return None
    return ranked[0] if ranked else None


# --- readers --------------------------------------------------------------------------------------


def exported_lock(text: str, project: Path) -> RequirementSet:
    """`uv export --format requirements-txt` output; local paths made absolute to `project`."""
    lines = [_absolute(line, project) for line in text.splitlines()]
    return _finish(parse_requirements("\n".join(lines)))


def pipfile_lock(text: str, source: str = "Pipfile.lock") -> RequirementSet:
    """The "default" section of a Pipfile.lock (what `pipenv install --deploy` installs)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequirementsError(f"{source} is not valid JSON: {exc}", kind="lock_invalid") from None
    default = data.get("default") if isinstance(data, dict) else None
    if not isinstance(default, dict):
        raise RequirementsError(f"{source} has no \"default\" section", kind="lock_invalid")
    lines = [_pipfile_line(name, entry, source) for name, entry in sorted(default.items())]
    python = ((data.get("_meta") or {}).get("requires") or {}).get("python_version")
    return _finish(parse_requirements(lines), python_hint=str(python) if python else None)


def poetry_lock(text: str, pyproject: str | None = None, source: str = "poetry.lock") -> RequirementSet:
    """The main group of a poetry.lock (what `poetry install --only main` installs)."""
    if tomllib is None:
        raise RequirementsError("reading poetry.lock needs Python 3.11 or newer on the agent", kind="lock_invalid")
    data = _toml(text, source)
    packages = [p for p in data.get("package", []) if isinstance(p, dict) and "name" in p and "version" in p]
    wanted = _poetry_main(packages, _toml(pyproject, "pyproject.toml") if pyproject else {})
    lines = [_poetry_line(p) for p in packages if canonicalize_name(p["name"]) in wanted]
    return _finish(parse_requirements(lines))


def _finish(reqs: RequirementSet, python_hint: str | None = None) -> RequirementSet:
    if reqs.hashed() and not any(r.line == "--require-hashes" for r in reqs.requirements):
        reqs = RequirementSet(parse_requirements("--require-hashes").requirements + reqs.requirements, reqs.python_hint)
    return RequirementSet(reqs.requirements, python_hint or reqs.python_hint)


def _absolute(line: str, project: Path) -> str:
    stripped = line.strip()
    for prefix in ("-e ./", "-e ../", "./", "../"):
        if stripped.startswith(prefix):
            head = "-e " if prefix.startswith("-e") else ""
            return head + str((project / stripped[len(head):]).resolve())
    return line


def _pipfile_line(name: str, entry: Any, source: str) -> str:
    if isinstance(entry, str):
        entry = {"version": entry}
    if not isinstance(entry, dict):
        raise RequirementsError(f"{source}: entry {name!r} is not an object", kind="lock_invalid")
    extras = f"[{','.join(entry['extras'])}]" if entry.get("extras") else ""
    marker = f" ; {entry['markers']}" if entry.get("markers") else ""
    if entry.get("git"):
        ref = f"@{entry['ref']}" if entry.get("ref") else ""
        return f"{name}{extras} @ git+{entry['git']}{ref}{marker}"
    if entry.get("file") or entry.get("path"):
        return f"{name}{extras} @ {entry.get('file') or entry.get('path')}{marker}"
    version = str(entry.get("version") or "")
    if version == "*":
        version = ""
    return f"{name}{extras}{version}{marker}{_hash_options(entry.get('hashes') or ())}"


def _hash_options(hashes: Iterable[str]) -> str:
    return "".join(f" --hash={h}" for h in hashes)


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return dict(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"{source} is not valid TOML: {exc}", kind="lock_invalid") from None


def _poetry_line(package: Mapping[str, Any]) -> str:
    name, version = package["name"], package["version"]
    origin = package.get("source") or {}
    marker = _poetry_marker(package.get("markers"))
    if origin.get("type") == "git":
        commit = origin.get("resolved_reference") or origin.get("reference") or ""
        return f"{name} @ git+{origin['url']}@{commit}{marker}"
    if origin.get("type") in ("url", "file", "directory"):
        return f"{name} @ {origin['url']}{marker}"
    hashes = [f["hash"] for f in package.get("files") or () if isinstance(f, dict) and f.get("hash")]
    return f"{name}=={version}{marker}{_hash_options(hashes)}"


def _poetry_marker(markers: Any) -> str:
    """Lock 2.1 writes a package's environment markers as a string, or per group."""
    if isinstance(markers, dict):
        markers = markers.get("main")
    return f" ; {markers}" if isinstance(markers, str) and markers else ""


def _poetry_main(packages: list[dict[str, Any]], pyproject: Mapping[str, Any]) -> set[str]:
    """Names of the packages the main group needs: by `groups` (lock 2.1), `category` (lock 1.x),
    else by walking the dependency graph from pyproject's main dependencies (lock 2.0)."""
    if any("groups" in p for p in packages):
        return {canonicalize_name(p["name"]) for p in packages if "main" in (p.get("groups") or ())}
    if any("category" in p for p in packages):
        return {canonicalize_name(p["name"]) for p in packages if p.get("category") == "main"}
    roots = _poetry_roots(pyproject)
    if not roots:
        return {canonicalize_name(p["name"]) for p in packages if not p.get("optional")}
    edges: dict[str, list[str]] = {
        canonicalize_name(p["name"]): [canonicalize_name(d) for d in p.get("dependencies") or {}] for p in packages
    }
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen and name in edges:
            seen.add(name)
            todo.extend(edges[name])
    return seen


def _poetry_roots(pyproject: Mapping[str, Any]) -> set[str]:
    poetry = (pyproject.get("tool") or {}).get("poetry") or {}
    names: set[str] = {canonicalize_name(n) for n in poetry.get("dependencies") or {} if n.lower() != "python"}
    for spec in (pyproject.get("project") or {}).get("dependencies") or ():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", str(spec))
        if match:
            names.add(canonicalize_name(match.group(1)))
    return names
