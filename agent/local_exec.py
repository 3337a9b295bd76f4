"""Venv mode: the task's environment is a venv on this machine (agent/build.py, from the
environment cache) and the task a child process in its own process group (agent/process.py)."""
from __future__ import annotations

import os
import shutil

from agent import taskenv
from agent.build import BuiltTask, build_task
from agent.process import Child
from agent.runner import ExitStatus, Prepared, RunContext, RunResult
from sandbox.env_cache import EnvCache
from sandbox.repo_cache import RepoCache
from shipyard.errors import TaskError


class LocalLaunch:
    """A Child as the runner sees it: two pipes, wait, terminate, reap, close."""

    def __init__(self, child: Child):
        self.child = child
        self.stdout_fd = child.proc.stdout.fileno()
        self.stderr_fd = child.proc.stderr.fileno()

    def wait(self, timeout: float | None = None) -> int | None:
        return self.child.wait(timeout)

    def terminate(self, grace_s: float) -> None:
        self.child.terminate(grace_s)

    def reap(self) -> None:
        self.child.reap_group()

    def close(self) -> None:
        self.child.proc.stdout.close()
        self.child.proc.stderr.close()


class LocalExecutor:
    def __init__(self, context: RunContext, *, env_cache: EnvCache | None = None,
                 repo_cache: RepoCache | None = None):
        self.context = context
        self.env_cache = env_cache
        self.repo_cache = repo_cache

    def prepare(self, task: dict) -> Prepared:
        target = self.context.target
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        built = build_task(task, target, self.context.settings, self.context.note, env_cache=self.env_cache,
                           repo_cache=self.repo_cache)
        return Prepared(workspace=built.workspace, frozen=built.env.frozen, detail=built)

    def start(self, task: dict, prepared: Prepared) -> LocalLaunch:
        built: BuiltTask = prepared.detail
        env, argv = self._env_and_argv(task, built)
        self.context.note("running: " + " ".join(argv))
        try:
            return LocalLaunch(Child(argv, built.workspace.working_dir, env))
        except OSError as exc:
            raise TaskError(f"could not start {argv[0]}: {exc}") from None

    def finish(self, prepared: Prepared, launched: LocalLaunch) -> RunResult:  # noqa: ARG002
        info = launched.child.exit_info()
        return RunResult(ExitStatus(info.returncode, info.signalled, info.killed))

    def cleanup(self) -> None:
        shutil.rmtree(self.context.target, ignore_errors=True)

    def _env_and_argv(self, task: dict, built: BuiltTask) -> tuple[dict[str, str], list[str]]:
        env = taskenv.build_env(os.environ, self.context.connection, self.context.task_id, built.venv,
                                self.context.extra_env, taskenv.task_env_section(task))
        lines = [r.line for r in built.requirements.requirements]
        with_args = not taskenv.uses_sdk(built.workspace.entry_point, lines)
        if built.workspace.module:
            argv = [str(built.env.python), "-m", built.workspace.module]
            argv += taskenv.args_from_hyperparams(task) if with_args else []
        else:
            argv = taskenv.build_argv(built.env.python, built.workspace.entry_point, task, with_args)
        return env, argv
