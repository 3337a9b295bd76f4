"""Rebuild a task's environment: its code (sandbox.git_workspace) and its Python (sandbox.env_cache)."""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
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
_Env = tuple[RequirementSet, EnvResult]


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
    """Check out the code into target/code and build the venv at target/venv (its own parts `owner`'s).
    When the task records its requirements (as the SDK does) and they name no local path, the
    venv is built while the code is checked out: it cannot depend on the checkout then."""
    agent = settings.agent
    repo_cache = repo_cache or RepoCache(agent.git_cache_dir)
    env_cache = env_cache or EnvCache(agent.venv_cache_dir)
    script = task.get("script") or {}
    recorded = from_script(script)
    early: Future[_Env] | None = None
    if recorded and recorded.uncacheable_reason() is None:
        early = _in_thread(_environment, recorded, "task", script, target, settings, log, env_cache, owner)
    try:
        workspace = prepare_workspace(script, target / "code", repo_cache, credentials=git_credentials(settings, str(script.get("repository") or "")), log=log)
    except BaseException:
        if early is not None:
            futures_wait([early])   # never leave a build writing into the run's directory
        raise
    if early is not None:
        source = "task"
        requirements, env = early.result()
    else:
        requirements, source = task_requirements(task, workspace)
        requirements, env = _environment(requirements, source, script, target, settings, log, env_cache, owner)
    log(f"environment ready in {env.seconds:.2f}s ({'cache hit' if env.cache_hit else 'built'})")
    return BuiltTask(workspace=workspace, env=env, requirements=requirements,
                     requirements_source=source, venv=target / "venv")


def _environment(requirements: RequirementSet, source: str, script: dict, target: Path, settings: Settings,
                 log: Log, env_cache: EnvCache, owner: tuple[int, int] | None) -> tuple[RequirementSet, EnvResult]:
    """The venv at target/venv for `requirements` (from `source`), from the cache when it can;
    and the requirements as installed (absent local files replaced by names)."""
    requirements, replaced = requirements.without_missing_local_files(lambda p: os.path.exists(p))
    for line in replaced:
        log(f"requirement '{line}' points at a file that is not on this machine; installing by name")
    log(f"requirements from {source}: {len(requirements.requirements)} entries")
    python = select_interpreter(settings.agent.python_binary or script.get("binary"), requirements.python_hint, log=log)
    return requirements, env_cache.materialize(requirements, python, target / "venv", log=log, owner=owner)


def _in_thread(fn: Callable[..., _Env], *args: object) -> Future[_Env]:
    """`fn(*args)` on a daemon thread; its result (or its exception) in the future."""
    future: Future[_Env] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - raised again where the result is read
            future.set_exception(exc)

    threading.Thread(target=run, name="materialize", daemon=True).start()
    return future
