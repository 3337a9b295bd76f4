"""Fixtures for the sandbox tests: real git repositories in tmp dirs, real venvs, one uv cache."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox.git_workspace import RepoCache
from sandbox.pyenv import EnvBuilder, Interpreter
from sandbox.requirements import RequirementSet

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", *args],
        cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV}, check=True,
    )
    return proc.stdout.strip()


class SourceRepo:
    """A real repository standing in for a remote (tests use its path or file:// URL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        git(path, "init", "--quiet", "-b", "main")

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        git(self.path, "add", "-A")
        git(self.path, "commit", "--quiet", "-m", message)
        return self.head()

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def diff_of(self, files: dict[str, str]) -> str:
        """The `git diff` that editing `files` would record, leaving the repository unchanged."""
        originals = {n: (self.path / n).read_text() if (self.path / n).exists() else None for n in files}
        for name, content in files.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_text(content)
        git(self.path, "add", "--intent-to-add", "--", *files)
        diff = git(self.path, "diff") + "\n"
        git(self.path, "reset", "--quiet")
        for name, content in originals.items():
            if content is None:
                (self.path / name).unlink()
            else:
                (self.path / name).write_text(content)
        return diff

    def run(self, *args: str) -> str:
        return git(self.path, *args)


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[[str], SourceRepo]:
    return lambda name: SourceRepo(tmp_path / "remotes" / name)


@pytest.fixture
def repo_cache(tmp_path: Path) -> RepoCache:
    return RepoCache(tmp_path / "vcs-cache")


@pytest.fixture(scope="session")
def uv_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by every test so each package is downloaded once per session."""
    return tmp_path_factory.mktemp("uv-cache")


class RecordingBuilder(EnvBuilder):
    """The real builder, counting how often it runs; `forbid()` makes any further build fail."""

    calls: int = 0
    forbidden: bool = False

    def build(self, python: Interpreter, requirements: RequirementSet, target: Path, log=print,
              beside=None) -> list[str]:
        if self.forbidden:
            raise AssertionError("the installer ran although the environment was cached")
        self.calls += 1
        return super().build(python, requirements, target, log, beside)

    def forbid(self) -> None:
        self.forbidden = True


@pytest.fixture
def builder(uv_cache_dir: Path) -> RecordingBuilder:
    return RecordingBuilder(uv_cache_dir=uv_cache_dir)


@pytest.fixture
def light_builder(uv_cache_dir: Path) -> RecordingBuilder:
    """No pip in the venv: smaller and faster, for tests about cache mechanics."""
    return RecordingBuilder(uv_cache_dir=uv_cache_dir, seed_pip=False)
