"""Rebuild a task's code: repository at the recorded revision, submodules, uncommitted diff.

    cache = RepoCache(Path("~/.shipyard/vcs-cache").expanduser())
    ws = prepare_workspace(task["script"], Path("/work/task-123/code"), cache,
                           credentials={"github.com": ("bot", token)}, log=logger.info)
    # run: <venv python> ws.entry_point   (cwd=ws.working_dir)

`script` is ClearML's task `script` object. A task without a repository whose `diff` holds the
whole script text (ClearML's "literal script") is written to `dest/<entry_point>`.
A repository, branch, tag or commit that starts with `-` is refused before git runs
(`ScriptSpec.check`): git would read it as an option.
"""
from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.gitcmd import (
    DEFAULT_NETWORK_TIMEOUT,
    Credentials,
    GitRunner,
    check_git_value,
    git_reason,
    is_network_failure,
    strip_userinfo,
)
from sandbox.patching import apply_diff, looks_like_patch
from sandbox.repo_cache import RepoCache, Revision, is_local
from shipyard.errors import InfrastructureError, WorkspaceError

__all__ = ["RepoCache", "Revision", "ScriptSpec", "Workspace", "prepare_workspace"]

Log = Callable[[str], None]

DEFAULT_LITERAL_NAME = "script.py"
LISTING_LIMIT = 20


@dataclass(frozen=True)
class Workspace:
    """Where a task's code lives once rebuilt. All paths are absolute."""

    root: Path
    working_dir: Path
    entry_point: Path
    commit: str | None
    repository: str | None
    module: str | None = None
    """Set for `-m package.module` entry points; `entry_point` is then the working dir."""


@dataclass(frozen=True)
class ScriptSpec:
    """The parts of ClearML's `script` object that locate the code."""

    repository: str = ""
    revision: Revision = Revision()
    entry_point: str = ""
    working_dir: str = "."
    diff: str = ""

    @classmethod
    def from_dict(cls, script: Mapping[str, Any]) -> ScriptSpec:
        def text(key: str) -> str:
            return str(script.get(key) or "").strip()

        branch = text("branch").removeprefix("remotes/").removeprefix("origin/")
        revision = Revision(commit=text("version_num") or None, tag=text("tag") or None, branch=branch or None)
        return cls(
            repository=text("repository"),
            revision=revision,
            entry_point=text("entry_point"),
            working_dir=text("working_dir") or ".",
            diff=str(script.get("diff") or ""),
        )

    def check(self) -> None:
        """Raise WorkspaceError for a value that git would read as an option."""
        check_git_value(self.repository, "repository", "the repository's URL or path")
        self.revision.check()


def prepare_workspace(
    script: Mapping[str, Any],
    dest: Path,
    cache: RepoCache,
    credentials: Credentials | None = None,
    log: Log = print,
    *,
    network_timeout: float = DEFAULT_NETWORK_TIMEOUT,
) -> Workspace:
    """Rebuild the task's code in the empty (or absent) directory `dest`.

    Raises WorkspaceError when the task is at fault (bad URL, unknown commit, diff that does
    not apply, missing entry point) and InfrastructureError for network trouble worth retrying.
    On any error `dest` is left empty, so the caller may retry into it.
    """
    spec = ScriptSpec.from_dict(script)
    if spec.repository:
        spec.check()
    dest = _prepare_dest(Path(dest))
    try:
        if not spec.repository:
            return _literal_workspace(spec, dest, log)
        return _repository_workspace(spec, dest, cache, GitRunner(credentials, network_timeout=network_timeout), log)
    except BaseException:
        _empty(dest)
        raise


def local_path_missing(url: str) -> str | None:
    """Why a repository that is a path on the submitting machine cannot be used here (None: it can,
    or it is not a path). Such a task runs only where that path exists."""
    if not is_local(url):
        return None
    path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
    if path.exists():
        return None
    return (f"the task's repository {url} is a path on the machine that created the task, and this "
            "worker cannot see it; push the repository to a git server the workers can reach "
            "(git remote add origin URL && git push) and create the task again from it, or run a "
            "worker on the machine that has the path")


def _repository_workspace(spec: ScriptSpec, dest: Path, cache: RepoCache, runner: GitRunner, log: Log) -> Workspace:
    url, url_credentials = strip_userinfo(spec.repository)
    runner.allow_file_protocol = is_local(url)
    if url_credentials:
        runner.add_credentials(url, url_credentials)
    with runner as git:
        try:
            commit = cache.checkout(url, spec.revision, dest, git, log)
        except WorkspaceError as exc:  # a path of another machine (the cache may still have served it)
            missing = local_path_missing(url)
            if missing is None:
                raise
            raise WorkspaceError(missing, kind="repository_unreachable") from exc
        _update_submodules(dest, url, git, log)
        if spec.diff.strip():
            apply_diff(dest, spec.diff, git, log)
    working_dir, entry_point, module = _locate_entry(dest, spec)
    return Workspace(dest, working_dir, entry_point, commit, url, module)


def _prepare_dest(dest: Path) -> Path:
    dest = dest.expanduser().absolute()
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"workspace destination {dest} is not empty")
    return dest


def _empty(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _literal_workspace(spec: ScriptSpec, dest: Path, log: Log) -> Workspace:
    if not spec.diff.strip():
        raise WorkspaceError(
            "task has no repository and no script text (script.diff is empty); nothing to run",
            kind="no_code",
        )
    if looks_like_patch(spec.diff):
        raise WorkspaceError(
            "task has no repository but script.diff is a patch; set script.repository to the "
            "repository the diff belongs to",
            kind="no_code",
        )
    name = spec.entry_point if spec.entry_point and not spec.entry_point.startswith("-m") else ""
    entry_point = _inside(dest, name or DEFAULT_LITERAL_NAME, "entry point")
    entry_point.parent.mkdir(parents=True, exist_ok=True)
    entry_point.write_text(spec.diff)
    log(f"task has no repository; wrote its script text to {entry_point}")
    return Workspace(dest, dest, entry_point, None, None)


def _update_submodules(root: Path, url: str, git: GitRunner, log: Log) -> None:
    if not (root / ".gitmodules").exists():
        return
    proc = git.run(["submodule", "update", "--init", "--recursive", "--quiet"], cwd=root, network=True)
    if proc.returncode != 0:
        reason = git_reason(proc.stderr)
        message = f"could not fetch the submodules of {url}: {reason}"
        if is_network_failure(reason):
            raise InfrastructureError(message, kind="git_network")
        raise WorkspaceError(
            f"{message}; check the submodule URLs in .gitmodules and the agent's git credentials",
            kind="submodule_failed",
        )
    log("initialized submodules")


def _locate_entry(root: Path, spec: ScriptSpec) -> tuple[Path, Path, str | None]:
    working_dir = _inside(root, spec.working_dir, "working directory")
    if not working_dir.is_dir():
        raise WorkspaceError(
            f"working directory '{spec.working_dir}' does not exist in the repository; "
            f"the repository root contains: {_listing(root)}",
            kind="entry_point_missing",
        )
    if not spec.entry_point:
        raise WorkspaceError("task has no entry point (script.entry_point is empty)", kind="entry_point_missing")
    if spec.entry_point.startswith("-m "):
        return working_dir, working_dir, spec.entry_point[3:].strip()
    entry_point = _inside(working_dir, spec.entry_point, "entry point")
    if not entry_point.is_file():
        raise WorkspaceError(_missing_entry_message(root, working_dir, entry_point, spec), kind="entry_point_missing")
    return working_dir, entry_point, None


def _inside(base: Path, relative: str, what: str) -> Path:
    path = Path(os.path.normpath(base / relative))
    if path != base and base not in path.parents:
        raise WorkspaceError(f"{what} '{relative}' points outside the repository", kind="entry_point_missing")
    return path


def _missing_entry_message(root: Path, working_dir: Path, entry_point: Path, spec: ScriptSpec) -> str:
    existing = entry_point.parent
    while not existing.is_dir():
        existing = existing.parent
    where = existing.relative_to(root).as_posix() or "."
    message = (
        f"entry point '{spec.entry_point}' not found: {entry_point} does not exist; "
        f"'{where}' contains: {_listing(existing)}"
    )
    guess = _similar_file(root, entry_point)
    return message + (f"; did you mean '{guess}'?" if guess else "")


def _listing(directory: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir() if p.name != ".git")
    if not names:
        return "nothing"
    shown = ", ".join(names[:LISTING_LIMIT])
    return shown + (f" ... and {len(names) - LISTING_LIMIT} more" if len(names) > LISTING_LIMIT else "")


def _similar_file(root: Path, wanted: Path, limit: int = 5000) -> str | None:
    """A file in the repository whose name is close to the wanted one (first few thousand files)."""
    candidates: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        candidates += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames]
        if len(candidates) > limit:
            break
    by_name = {Path(c).name: c for c in sorted(candidates, key=len, reverse=True)}
    close = difflib.get_close_matches(wanted.name, list(by_name), n=1, cutoff=0.75)
    return by_name[close[0]] if close else None
