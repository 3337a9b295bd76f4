"""A cache of bare git mirrors, one per repository URL, safe for concurrent agents.

Layout under the cache root:

    <sha256 of normalized URL>/        bare mirror (heads and tags of the remote)
    <sha256 of normalized URL>.lock    flock guarding clone, fetch and copy-out

A mirror is fetched only when the revision a task wants is not already in it (a commit or tag
we have) or when the revision moves by nature (a branch head, the default HEAD).

`checkout` refuses a URL or revision that starts with `-` (git would take it for an option),
and every URL or path reaches git after `--`.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sandbox.gitcmd import GitRunner, check_git_value, git_reason, is_network_failure
from shipyard.errors import InfrastructureError, WorkspaceError
from shipyard.locks import file_lock

Log = Callable[[str], None]

LOCK_TIMEOUT = 900.0
"""Seconds to wait for another agent that is cloning or fetching the same repository."""

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Revision:
    """What a task asks for, in ClearML's precedence: commit, else tag, else branch, else HEAD."""

    commit: str | None = None
    tag: str | None = None
    branch: str | None = None

    def describe(self) -> str:
        if self.commit:
            return f"commit {self.commit}"
        if self.tag:
            return f"tag '{self.tag}'"
        if self.branch:
            return f"branch '{self.branch}'"
        return "the default branch (HEAD)"

    def ref(self) -> str:
        """The git revision expression for this request, as seen inside the mirror."""
        if self.commit:
            return f"{self.commit}^{{commit}}"
        if self.tag:
            return f"refs/tags/{self.tag}^{{commit}}"
        if self.branch:
            return f"refs/heads/{self.branch}^{{commit}}"
        return "HEAD^{commit}"

    def check(self) -> None:
        """Raise WorkspaceError for a value git would read as an option."""
        check_git_value(self.commit, "version_num", "a commit id")
        check_git_value(self.tag, "tag", "a tag name")
        check_git_value(self.branch, "branch", "a branch name")

    @property
    def moves(self) -> bool:
        """Branch heads and HEAD move, so they always need a fetch; commits and tags don't."""
        return not (self.commit or self.tag)


def is_local(url: str) -> bool:
    return url.startswith("file://") or "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url)


def normalize_url(url: str) -> str:
    """A stable spelling of a repository URL: the same remote always maps to the same mirror."""
    url = url.strip()
    if is_local(url):
        path = url[len("file://"):] if url.startswith("file://") else url
        return "file://" + str(Path(path).expanduser().resolve()).rstrip("/")
    if "://" not in url:  # scp-like: git@host:org/repo.git
        user_host, _, path = url.partition(":")
        url = f"ssh://{user_host}/{path}"
    parts = urlsplit(url)
    host = (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")
    path = parts.path.rstrip("/").removesuffix(".git")
    return urlunsplit((parts.scheme.lower(), host, path, "", ""))


class RepoCache:
    """One cached bare mirror per repository URL under `root`."""

    def __init__(self, root: Path, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.root = Path(root)
        self.lock_timeout = lock_timeout

    def mirror_dir(self, url: str) -> Path:
        return self.root / hashlib.sha256(normalize_url(url).encode()).hexdigest()

    def checkout(self, url: str, revision: Revision, dest: Path, git: GitRunner, log: Log) -> str:
        """Copy the repository at `revision` into the empty directory `dest`; return the sha.

        Holds the mirror's lock throughout, so a concurrent fetch never prunes refs mid-copy.
        """
        check_git_value(url, "repository", "the repository's URL or path")
        revision.check()
        mirror = self.mirror_dir(url)
        with file_lock(mirror.with_suffix(".lock"), timeout=self.lock_timeout):
            fresh = self._ensure_mirror(url, mirror, git, log)
            sha = self._resolve(url, mirror, revision, git, log, fresh=fresh)
            _copy_out(url, mirror, sha, revision, dest, git)
        log(f"checked out {revision.describe()} of {url} at {sha[:12]}")
        return sha

    def _ensure_mirror(self, url: str, mirror: Path, git: GitRunner, log: Log) -> bool:
        if (mirror / "HEAD").exists():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in [mirror, *self.root.glob(f"{mirror.name}.*.tmp")]:  # an interrupted clone
            shutil.rmtree(leftover, ignore_errors=True)
        log(f"cloning {url} into the repository cache")
        tmp = Path(tempfile.mkdtemp(prefix=mirror.name + ".", suffix=".tmp", dir=self.root))
        try:
            proc = git.run(["clone", "--bare", "--quiet", "--", url, str(tmp)], network=True)
            _raise_for_fetch(proc, url)
            tmp.rename(mirror)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def _resolve(
        self, url: str, mirror: Path, revision: Revision, git: GitRunner, log: Log, *, fresh: bool
    ) -> str:
        sha = None if revision.moves and not fresh else _rev_parse(mirror, revision.ref(), git)
        if sha:
            return sha
        if not fresh:
            log(f"fetching {url} for {revision.describe()}")
            _fetch(url, mirror, git, default_head=not (revision.commit or revision.tag or revision.branch))
            sha = _rev_parse(mirror, revision.ref(), git)
        if not sha and revision.commit and _FULL_SHA.match(revision.commit):
            # Commits that no branch or tag reaches (e.g. a deleted branch) can often be
            # fetched by their id; keep them under a private ref so gc leaves them alone.
            ref = f"+{revision.commit}:refs/shipyard/{revision.commit}"
            git.run(["fetch", "--quiet", "--", url, ref], cwd=mirror, network=True)
            sha = _rev_parse(mirror, revision.ref(), git)
        if not sha:
            raise WorkspaceError(_not_found_message(url, revision), kind="unknown_revision")
        return sha


def _fetch(url: str, mirror: Path, git: GitRunner, *, default_head: bool) -> None:
    refspecs = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
    proc = git.run(
        ["fetch", "--quiet", "--prune", "--update-head-ok", "--", url, *refspecs], cwd=mirror, network=True
    )
    _raise_for_fetch(proc, url)
    if default_head:
        _refresh_head(url, mirror, git)


def _refresh_head(url: str, mirror: Path, git: GitRunner) -> None:
    """Follow the remote's default branch if it changed since the mirror was cloned."""
    proc = git.run(["ls-remote", "--symref", "--", url, "HEAD"], cwd=mirror, network=True)
    match = re.search(r"^ref: (refs/heads/\S+)\tHEAD$", proc.stdout, re.MULTILINE)
    if proc.returncode == 0 and match:
        git.run(["symbolic-ref", "HEAD", match.group(1)], cwd=mirror)


def _rev_parse(repo: Path, expression: str, git: GitRunner) -> str | None:
    proc = git.run(["rev-parse", "--verify", "--quiet", expression], cwd=repo)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _copy_out(url: str, mirror: Path, sha: str, revision: Revision, dest: Path, git: GitRunner) -> None:
    proc = git.run(["clone", "--quiet", "--no-checkout", "--", str(mirror), str(dest)])
    if proc.returncode != 0:
        raise InfrastructureError(f"could not copy the cached mirror of {url}: {git_reason(proc.stderr)}")
    git.run(["remote", "set-url", "--", "origin", url], cwd=dest)  # the task sees its real remote
    branch_head = revision.branch and _rev_parse(dest, f"refs/remotes/origin/{revision.branch}", git)
    if revision.branch and branch_head == sha:
        args = ["checkout", "--quiet", "--force", "-B", revision.branch, sha]
    else:
        args = ["checkout", "--quiet", "--force", "--detach", sha]
    proc = git.run(args, cwd=dest)
    if proc.returncode != 0:
        raise WorkspaceError(f"could not check out {sha[:12]} of {url}: {git_reason(proc.stderr)}")


def _raise_for_fetch(proc: subprocess.CompletedProcess[str], url: str) -> None:
    if proc.returncode == 0:
        return
    reason = git_reason(proc.stderr)
    message = f"could not fetch repository {url}: {reason}"
    if is_network_failure(reason):
        raise InfrastructureError(message, kind="git_network")
    raise WorkspaceError(
        f"{message}; check the URL and the agent's git credentials", kind="repository_unreachable"
    )


def _not_found_message(url: str, revision: Revision) -> str:
    if revision.commit:
        return f"commit {revision.commit} not found in {url}; was it pushed?"
    if revision.tag:
        return f"tag '{revision.tag}' not found in {url}; was it pushed (git push --tags)?"
    if revision.branch:
        return f"branch '{revision.branch}' not found in {url}; was it pushed or deleted?"
    return f"{url} has no default branch (HEAD); is the repository empty?"
