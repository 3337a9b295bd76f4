"""Where a task's environment comes from, read: the recorded packages or a repository file.

    source = resolve(recorded, [working_dir, repo_root], repo_root, PackageManager.PIP,
                     force_repo=False, uv_export=lambda project: export_uv_lock(builder, project))
    log(source.describe())      # "environment from uv.lock (42 packages, hashes checked)"
    task runtime info += source.runtime()

`discover` lists the candidate files of the working directory, then of the repository root;
`lockfiles.choose` picks one (its precedence is documented there); `load` reads it. uv.lock is
read by uv itself (`uv lock --check`, then `uv export --frozen`: a lock that no longer matches
pyproject.toml fails with uv's own message), so what is installed is what `uv sync` would install.
"""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox import install_errors
from sandbox.lockfiles import (
    PackageManager,
    SourceFile,
    SourceKind,
    choose,
    classify_file,
    exported_lock,
    pipfile_lock,
    poetry_lock,
)
from sandbox.pyenv import EnvBuilder
from sandbox.requirements import (
    Kind,
    RequirementSet,
    parse_requirements,
    pyproject_dependencies,
    read_requirements_file,
)
from shipyard.errors import RequirementsError

UvExport = Callable[[Path], str]

_FIXED_NAMES = ("uv.lock", "poetry.lock", "Pipfile.lock", "requirements.txt", "pyproject.toml")


@dataclass(frozen=True)
class EnvSource:
    requirements: RequirementSet
    label: str
    """"task" (the recorded packages), "none", or the file's path relative to the repository."""
    kind: SourceKind | None = None

    def packages(self) -> int:
        return sum(1 for r in self.requirements.requirements if r.kind not in (Kind.OPTION, Kind.INCLUDE))

    def describe(self) -> str:
        if self.kind is None and self.label == "none":
            return "environment without packages (none recorded, no requirements or lock file in the repository)"
        what = "the task's recorded packages" if self.kind is None else self.label
        checked = ", hashes checked" if self.requirements.hashed() else ""
        count = self.packages()
        return f"environment from {what} ({count} package{'' if count == 1 else 's'}{checked})"

    def runtime(self) -> dict[str, str]:
        """Properties for the task's runtime info."""
        return {"environment_source": self.label, "environment": self.describe().removeprefix("environment from ")}


def resolve(recorded: RequirementSet, places: Sequence[Path], root: Path, manager: PackageManager, *,
            force_repo: bool, uv_export: UvExport) -> EnvSource:
    """The environment's source, read. Raises RequirementsError for a bad or unsupported one."""
    picked = choose(bool(recorded), manager, force_repo=force_repo, found=discover(places))
    if picked is None:
        return EnvSource(recorded, "task" if recorded else "none")
    reqs = load(picked, uv_export)
    hint = recorded.python_hint or reqs.python_hint
    label = str(picked.path.relative_to(root)) if picked.path.is_relative_to(root) else str(picked.path)
    return EnvSource(RequirementSet(reqs.requirements, hint), label, picked.kind)


def discover(places: Sequence[Path]) -> list[SourceFile]:
    """Environment source files in each place (working dir first), each classified."""
    found: list[SourceFile] = []
    for directory in dict.fromkeys(Path(p) for p in places):
        names = [*_FIXED_NAMES, *sorted(p.name for p in directory.glob("requirements*.txt"))]
        for name in dict.fromkeys(names):
            path = directory / name
            kind = _kind(path) if path.is_file() else None
            if kind is not None:
                found.append(SourceFile(kind, path))
    return found


def _kind(path: Path) -> SourceKind | None:
    if path.name == "pyproject.toml":
        return SourceKind.PYPROJECT if pyproject_dependencies(path) else None
    text = path.read_text(errors="replace") if path.name.endswith(".txt") else None
    return classify_file(path, text)


def load(found: SourceFile, uv_export: UvExport) -> RequirementSet:
    path = found.path
    if found.kind is SourceKind.UV_LOCK:
        return exported_lock(uv_export(path.parent), path.parent)
    if found.kind is SourceKind.POETRY_LOCK:
        pyproject = path.parent / "pyproject.toml"
        return poetry_lock(path.read_text(), pyproject.read_text() if pyproject.is_file() else None, path.name)
    if found.kind is SourceKind.PIPFILE_LOCK:
        return pipfile_lock(path.read_text(), path.name)
    if found.kind is SourceKind.PYPROJECT:
        return parse_requirements(pyproject_dependencies(path))
    reqs = parse_requirements("\n".join(read_requirements_file(path, seen=set())))
    if found.kind is SourceKind.HASHED_REQUIREMENTS and reqs.hashed():
        return RequirementSet(parse_requirements("--require-hashes").requirements + reqs.requirements,
                              reqs.python_hint)
    return reqs


UV_INDEX_VARIABLES = ("UV_INDEX", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
                      "UV_NO_INDEX", "UV_INDEX_STRATEGY")
"""The agent's index settings, left out of the offline lock check: uv counts a lock made against
another index (the one the user had, not the worker's mirror) as out of date."""


def export_uv_lock(builder: EnvBuilder, project: Path) -> str:
    """`uv export` of the project's uv.lock: pinned lines with hashes, the project itself left out.

    The lock is first checked against pyproject.toml (`uv lock --check`): offline and with the
    project's own index settings, which needs no network when the lock is current; if that
    fails, once more with the agent's index settings, whose answer is final. Dependency groups
    are uv sync's defaults (the `dev` group included)."""
    _check_uv_lock(builder, project)
    proc = _uv(builder, ["export", "--frozen", "--format", "requirements-txt", "--no-emit-project", "--no-header",
                         "--no-annotate", "--no-python-downloads", "--project", str(project)])
    if proc.returncode != 0:
        raise RequirementsError(f"uv.lock cannot be used: {install_errors.reason(proc.stderr or proc.stdout)}",
                                kind="lock_invalid")
    return proc.stdout


def _check_uv_lock(builder: EnvBuilder, project: Path) -> None:
    check = ["lock", "--check", "--no-python-downloads", "--project", str(project)]
    if _uv(builder, [*check, "--offline"], drop=UV_INDEX_VARIABLES).returncode == 0:
        return
    proc = _uv(builder, check)
    if proc.returncode == 0:
        return
    output = proc.stderr or proc.stdout
    if install_errors.classify(output) == "network":
        raise install_errors.network_error(output)
    raise RequirementsError(f"uv.lock cannot be used: {install_errors.reason(output)}", kind="lock_invalid")


def _uv(builder: EnvBuilder, args: list[str], drop: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    proc = builder.run_uv(args, drop)
    if proc is None:
        raise RequirementsError("the task's uv.lock needs uv on this machine, and uv was not found",
                                kind="installer_missing")
    return proc
