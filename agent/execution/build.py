"""Rebuild a task's environment: its code (sandbox.git_workspace) and its Python (sandbox.env_cache)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from sandbox.env_cache import EnvCache, EnvResult
from sandbox.git_workspace import Workspace, prepare_workspace
from sandbox.pyenv import select_interpreter
from sandbox.repo_cache import RepoCache
from sandbox.requirements import RequirementSet, find_repo_requirements, from_script
from shipyard.client.config import Settings

Log = Callable[[str], None]


@dataclass
class BuiltTask:
    workspace: Workspace
    env: EnvResult
    requirements: RequirementSet
    requirements_source: str   # "task", a repository file, or "none"
    venv: Path


def git_credentials(settings: Settings, repository: str) -> dict[str, tuple[str, str]]:
    """Per-host credentials; ClearML's agent.git_user/git_pass apply to the task's own host."""
    creds = {c.host: (c.user, c.password) for c in settings.agent.git_credentials}
    host = urlsplit(repository).hostname if "://" in repository else None
    if host and settings.agent.git_user and settings.agent.git_pass:
        creds.setdefault(host, (settings.agent.git_user, settings.agent.git_pass))
    return creds


def task_requirements(task: dict, workspace: Workspace) -> tuple[RequirementSet, str]:
    """The task's recorded pip requirements, else the repository's; and where they came from."""
    recorded = from_script(task.get("script") or {})
    if recorded:
        return recorded, "task"
    found = find_repo_requirements(workspace.working_dir, workspace.root)
    if found is not None:
        return found.requirements, str(found.source.relative_to(workspace.root)) \
            if found.source.is_relative_to(workspace.root) else str(found.source)
    return recorded, "none"


def build_task(task: dict, target: Path, settings: Settings, log: Log, *, env_cache: EnvCache | None = None,
               repo_cache: RepoCache | None = None, owner: tuple[int, int] | None = None) -> BuiltTask:
    """Check out the code into target/code and build the venv at target/venv (its own parts `owner`'s)."""
    agent = settings.agent
    repo_cache = repo_cache or RepoCache(agent.git_cache_dir)
    env_cache = env_cache or EnvCache(agent.venv_cache_dir)
    script = task.get("script") or {}
    workspace = prepare_workspace(script, target / "code", repo_cache, credentials=git_credentials(settings, str(script.get("repository") or "")), log=log)
    requirements, source = task_requirements(task, workspace)
    requirements, replaced = requirements.without_missing_local_files(lambda p: os.path.exists(p))
    for line in replaced:
        log(f"requirement '{line}' points at a file that is not on this machine; installing by name")
    log(f"requirements from {source}: {len(requirements.requirements)} entries")
    python = select_interpreter(agent.python_binary or script.get("binary"), requirements.python_hint, log=log)
    env = env_cache.materialize(requirements, python, target / "venv", log=log, owner=owner)
    log(f"environment ready in {env.seconds:.2f}s ({'cache hit' if env.cache_hit else 'built'})")
    return BuiltTask(workspace=workspace, env=env, requirements=requirements,
                     requirements_source=source, venv=target / "venv")
