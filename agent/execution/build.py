"""Rebuild a task's environment: its code (sandbox.git_workspace), where its packages come from
(sandbox.envsource: recorded packages or a lock file) and its Python (sandbox.env_cache).

Just before install, `install_plan` adds the agent's extra indexes and the torch index for this
machine's driver (sandbox/torch_resolve.py); the chosen index is part of the cache key. A set
read from a lock file with hashes keeps its own torch (the hashes are for those wheels).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from sandbox.env_cache import EnvCache, EnvResult, Lease
from sandbox.envsource import EnvSource, export_uv_lock, resolve
from sandbox.git_workspace import Workspace, prepare_workspace
from sandbox.lockfiles import PackageManager
from sandbox.pyenv import EnvBuilder, Interpreter, select_interpreter
from sandbox.repo_cache import RepoCache
from sandbox.requirements import RequirementSet, from_script
from sandbox.torch_resolve import resolve_torch, wants_torch, with_extra_indexes
from shipyard.client.config import Settings

Log = Callable[[str], None]
_Env = tuple[RequirementSet, Interpreter, EnvResult]


@dataclass
class BuiltTask:
    workspace: Workspace
    env: EnvResult
    requirements: RequirementSet
    requirements_source: str   # "task", a repository file, or "none"
    venv: Path
    runtime: dict[str, str] = field(default_factory=dict)
    """What the task's runtime info records about its environment (source, Python)."""
    in_use: Lease | None = None
    """Holds the venv's cache entry in use (prune skips it) until closed, when the run ends
    (sandbox.env_cache.Lease: the venv is layered over the entry, which it then verifies)."""


def make_env_cache(settings: Settings) -> EnvCache:
    """The agent's environment cache, with its builder's index credentials and trusted hosts."""
    agent = settings.agent
    builder = EnvBuilder(index_credentials=agent.packages.credentials_by_host(),
                         trusted_hosts=agent.packages.trusted_hosts)
    return EnvCache(agent.venv_cache_dir, builder=builder, shared=agent.venvs_cache.shared_path)


def prune_env_cache(cache: EnvCache, settings: Settings, log: Log) -> list[str]:
    """Apply agent.venvs_cache's limits (between tasks); entries in use stay."""
    limits = settings.agent.venvs_cache
    if not limits.limited:
        return []
    return cache.prune(int(limits.max_size_gb * (1 << 30)) if limits.max_size_gb else None, log=log,
                       max_entries=limits.max_entries,
                       min_free_bytes=int(limits.free_space_threshold_gb * (1 << 30)) or None)


def install_plan(requirements: RequirementSet, settings: Settings, log: Log) -> tuple[RequirementSet, str]:
    """The hook just before install: the agent's extra indexes, then the torch index for this
    machine's driver. Returns the requirements to install and the cache key's `extra`."""
    packages = settings.agent.packages
    requirements = with_extra_indexes(requirements, packages.extra_index_urls)
    if packages.pytorch_resolve == "none" or not wants_torch(requirements):
        return requirements, ""
    if requirements.hashed():
        log("torch as the lock file pins it (its hashes are for those wheels; pytorch_resolve is not applied)")
        return requirements, ""
    from agent.gpus.inventory import driver_cuda_version  # only where torch is resolved (its import is ~30 ms)

    requirements, choice, line = resolve_torch(requirements, mode=packages.pytorch_resolve,
                                               cuda=driver_cuda_version(), indexes=packages.torch_indexes)
    if line:
        log(line)
    return requirements, choice.cache_key() if choice else ""


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
               repo_cache: RepoCache | None = None, owner: tuple[int, int] | None = None,
               standalone: bool = False) -> BuiltTask:
    """Check out the code into target/code and build the venv at target/venv (its own parts `owner`'s;
    `standalone`, for `shipyard build`: a venv that outlives the cache entry, EnvCache.materialize).
    When the task records its requirements (as the SDK does) and they name no local path, the
    venv is built while the code is checked out: it cannot depend on the checkout then."""
    agent = settings.agent
    repo_cache = repo_cache or RepoCache(agent.git_cache_dir)
    env_cache = env_cache or make_env_cache(settings)
    script = task.get("script") or {}
    recorded = from_script(script)
    early: Future[_Env] | None = None
    if recorded_wins(recorded, settings):
        early = _in_thread(_environment, EnvSource(recorded, "task"), script, target, settings, log, env_cache,
                           owner, standalone)
    try:
        workspace = prepare_workspace(script, target / "code", repo_cache, credentials=git_credentials(settings, str(script.get("repository") or "")), log=log)
    except BaseException:
        if early is not None:
            futures_wait([early])   # never leave a build writing into the run's directory
        raise
    if early is not None:
        source = EnvSource(recorded, "task")
        requirements, python, env = early.result()
    else:
        source = environment_source(task, workspace, settings, env_cache.builder)
        requirements, python, env = _environment(source, script, target, settings, log, env_cache, owner,
                                                 standalone)
    log(f"environment ready in {env.seconds:.2f}s ({'cache hit' if env.cache_hit else 'built'})")
    runtime = {**source.runtime(), "python_version": python.version}
    return BuiltTask(workspace=workspace, env=env, requirements=requirements,
                     requirements_source=source.label, venv=target / "venv", runtime=runtime,
                     in_use=env.lease)


def recorded_wins(recorded: RequirementSet, settings: Settings) -> bool:
    """Whether the recorded packages are the source whatever the checkout holds (sandbox/lockfiles.py
    `choose`: recorded first under the pip manager unless forced), and name no local path: then the
    venv can be built while the code is checked out."""
    agent = settings.agent
    return (bool(recorded) and recorded.uncacheable_reason() is None and not agent.force_repo_requirements
            and PackageManager(agent.package_manager_type) is PackageManager.PIP)


def _environment(source: EnvSource, script: dict, target: Path, settings: Settings, log: Log, env_cache: EnvCache,
                 owner: tuple[int, int] | None, standalone: bool = False) -> _Env:
    """The venv at target/venv for the source's requirements, from the cache when it can; and the
    requirements as installed (absent local files replaced by names) and the Python used."""
    requirements, install, python, extra = install_inputs(source, script, settings, log)
    return requirements, python, env_cache.materialize(install, python, target / "venv", extra=extra, log=log,
                                                       owner=owner, standalone=standalone,
                                                       bytecode_later=not standalone)


def install_inputs(source: EnvSource, script: dict, settings: Settings,
                   log: Log) -> tuple[RequirementSet, RequirementSet, Interpreter, str]:
    """What the cache is asked for: the requirements as recorded (absent local files replaced by
    names), as installed (install_plan), the Python, and the key's `extra`. The pickup and the
    daemon's prepare-while-queued (agent/daemon/prepare.py) both call this, so they agree on the key."""
    agent = settings.agent
    requirements, replaced = source.requirements.without_missing_local_files(lambda p: os.path.exists(p))
    for line in replaced:
        log(f"requirement '{line}' points at a file that is not on this machine; installing by name")
    log(source.describe())
    python = select_interpreter(agent.python_binary or script.get("binary"), requirements.python_hint, log=log,
                                strict=agent.python_version_strict)
    install, extra = install_plan(requirements, settings, log)
    return requirements, install, python, extra


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
