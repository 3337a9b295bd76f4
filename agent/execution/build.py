"""Rebuild a task's environment: its code (sandbox.git_workspace), where its packages come from
(sandbox.envsource: recorded packages or a lock file) and its Python (sandbox.env_cache)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from sandbox.env_cache import EnvCache, EnvResult
from sandbox.envsource import EnvSource, export_uv_lock, resolve
from sandbox.git_workspace import Workspace, prepare_workspace
from sandbox.lockfiles import PackageManager
from sandbox.pyenv import EnvBuilder, select_interpreter
from sandbox.repo_cache import RepoCache
from sandbox.requirements import RequirementSet, from_script
from shipyard.client.config import Settings

Log = Callable[[str], None]


@dataclass
class BuiltTask:
    workspace: Workspace
    env: EnvResult
    requirements: RequirementSet
    requirements_source: str   # "task", a repository file, or "none"
    venv: Path
    runtime: dict[str, str] = field(default_factory=dict)
    """What the task's runtime info records about its environment (source, Python)."""


def git_credentials(settings: Settings, repository: str) -> dict[str, tuple[str, str]]:
    """Per-host credentials; ClearML's agent.git_user/git_pass apply to the task's own host."""
    creds = {c.host: (c.user, c.password) for c in settings.agent.git_credentials}
    host = urlsplit(repository).hostname if "://" in repository else None
    if host and settings.agent.git_user and settings.agent.git_pass:
        creds.setdefault(host, (settings.agent.git_user, settings.agent.git_pass))
    return creds


def task_requirements(task: dict, workspace: Workspace, settings: Settings | None = None,
                      builder: EnvBuilder | None = None) -> tuple[RequirementSet, str]:
    """The requirements to install and where they came from ("task", a repository file, "none")."""
    source = environment_source(task, workspace, settings, builder)
    return source.requirements, source.label


def environment_source(task: dict, workspace: Workspace, settings: Settings | None = None,
                       builder: EnvBuilder | None = None) -> EnvSource:
    """The task's recorded packages or a repository lock/requirements file (sandbox/lockfiles.py)."""
    agent = settings.agent if settings is not None else None
    manager = PackageManager(agent.package_manager_type) if agent else PackageManager.PIP
    builder = builder or EnvBuilder()
    return resolve(from_script(task.get("script") or {}), [workspace.working_dir, workspace.root], workspace.root,
                   manager, force_repo=bool(agent and agent.force_repo_requirements),
                   uv_export=lambda project: export_uv_lock(builder, project))


def build_task(task: dict, target: Path, settings: Settings, log: Log, *, env_cache: EnvCache | None = None,
               repo_cache: RepoCache | None = None, owner: tuple[int, int] | None = None) -> BuiltTask:
    """Check out the code into target/code and build the venv at target/venv (its own parts `owner`'s)."""
    agent = settings.agent
    repo_cache = repo_cache or RepoCache(agent.git_cache_dir)
    env_cache = env_cache or EnvCache(agent.venv_cache_dir)
    script = task.get("script") or {}
    workspace = prepare_workspace(script, target / "code", repo_cache, credentials=git_credentials(settings, str(script.get("repository") or "")), log=log)
    source = environment_source(task, workspace, settings, env_cache.builder)
    requirements, replaced = source.requirements.without_missing_local_files(lambda p: os.path.exists(p))
    for line in replaced:
        log(f"requirement '{line}' points at a file that is not on this machine; installing by name")
    log(source.describe())
    python = select_interpreter(agent.python_binary or script.get("binary"), requirements.python_hint, log=log,
                                strict=agent.python_version_strict)
    env = env_cache.materialize(requirements, python, target / "venv", log=log, owner=owner)
    log(f"environment ready in {env.seconds:.2f}s ({'cache hit' if env.cache_hit else 'built'})")
    runtime = {**source.runtime(), "python_version": python.version}
    return BuiltTask(workspace=workspace, env=env, requirements=requirements,
                     requirements_source=source.label, venv=target / "venv", runtime=runtime)
