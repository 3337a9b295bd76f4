"""Venv mode: the task's environment is a venv on this machine (agent/build.py, from the
environment cache) and the task a child process in its own process group (agent/process.py).
With agent.task_user (agent/task_user.py) the run's directory is that user's, except the files
its venv shares with the cache, and the child runs as that user with HOME in the run's directory."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from agent.execution import taskconf, taskenv
from agent.execution.build import BuiltTask, build_task
from agent.execution.contract import ExitStatus, Prepared, RunContext, RunResult
from agent.execution.preempt import PREEMPT_FILE_ENV, PREEMPT_FILE_NAME
from agent.execution.process import Child
from agent.execution.task_user import TaskUser, resolve
from sandbox.env_cache import EnvCache
from sandbox.repo_cache import RepoCache
from shipyard.errors import TaskError


class LocalLaunch:
    """A Child as the runner sees it: two pipes, wait, terminate, reap, close."""

    def __init__(self, child: Child):
        self.child = child
        stdout, stderr = child.proc.stdout, child.proc.stderr
        assert stdout is not None and stderr is not None  # Child spawns with stdout=stderr=PIPE
        self._pipes = (stdout, stderr)
        self.stdout_fd = stdout.fileno()
        self.stderr_fd = stderr.fileno()

    def wait(self, timeout: float | None = None) -> int | None:
        return self.child.wait(timeout)

    def terminate(self, grace_s: float) -> None:
        self.child.terminate(grace_s)

    def signal(self, signum: int) -> None:
        self.child.signal_group(signum)

    def reap(self) -> None:
        self.child.reap_group()

    def close(self) -> None:
        for pipe in self._pipes:
            pipe.close()


class LocalExecutor:
    def __init__(self, context: RunContext, *, env_cache: EnvCache | None = None,
                 repo_cache: RepoCache | None = None, standalone: bool = False):
        self.context = context
        self.standalone = standalone
        """`shipyard build`: the venv must outlive the run (no task runs in it here)."""
        self.env_cache = env_cache
        self.repo_cache = repo_cache
        self.user = resolve(context.settings.agent.task_user)
        self.built: BuiltTask | None = None

    def prepare(self, task: dict) -> Prepared:
        target = self.context.target
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        built = build_task(task, target, self.context.settings, self.context.note, env_cache=self.env_cache,
                           repo_cache=self.repo_cache, owner=self.user.owner if self.user else None,
                           standalone=self.standalone)
        self.built = built
        if self.user is not None:
            self._hand_over(self.user, target, built.workspace.root)
        return Prepared(workspace=built.workspace, frozen=built.env.frozen, detail=built, runtime=built.runtime)

    def start(self, task: dict, prepared: Prepared) -> LocalLaunch:
        built: BuiltTask = prepared.detail
        env, argv = self._env_and_argv(task, built)
        if self.user is not None:
            env.update(self.user.env(self.context.target / "home"))
        self.context.note("running: " + " ".join(argv) + (f" (as user {self.user.name})" if self.user else ""))
        try:
            return LocalLaunch(Child(argv, built.workspace.working_dir, env, user=self.user))
        except OSError as exc:
            as_user = f" as user {self.user.name} (it must be able to read and run it)" if self.user else ""
            raise TaskError(f"could not start {argv[0]}{as_user}: {exc}") from None
        finally:
            built.env.after_start()   # the entry's byte-compiler, once the task is on its way

    def finish(self, prepared: Prepared, launched: LocalLaunch) -> RunResult:  # noqa: ARG002
        info = launched.child.exit_info()
        return RunResult(ExitStatus(info.returncode, info.signalled, info.killed))

    def cleanup(self) -> None:
        if self.built is not None:
            self.built.env.after_start()   # a run that never started still leaves the entry compiled
        shutil.rmtree(self.context.target, ignore_errors=True)
        if self.built is not None and self.built.in_use is not None:
            self.built.in_use.close()   # the cache entry may be evicted from now on

    @staticmethod
    def _hand_over(user: TaskUser, target: Path, checkout: Path) -> None:
        """The run's directory, a home in it and the checkout go to the task user (its venv already is)."""
        os.chown(target, *user.owner)
        (target / "home").mkdir()
        os.chown(target / "home", *user.owner)
        if checkout.is_relative_to(target):
            user.hand_over(checkout)

    def _env_and_argv(self, task: dict, built: BuiltTask) -> tuple[dict[str, str], list[str]]:
        env = taskenv.build_env(os.environ, self.context.connection, self.context.task_id, built.venv,
                                self.context.extra_env, taskenv.task_env_section(task))
        config = taskconf.write_task_config(self.context.target, self.context.settings.sdk, self.context.connection,
                                            owner=self.user.owner if self.user else None)
        env["CLEARML_CONFIG_FILE"] = str(config)
        env[PREEMPT_FILE_ENV] = str(self.context.target / PREEMPT_FILE_NAME)
        lines = [r.line for r in built.requirements.requirements]
        with_args = not taskenv.uses_sdk(built.workspace.entry_point, lines)
        if built.workspace.module:
            argv = [str(built.env.python), "-m", built.workspace.module]
            argv += taskenv.args_from_hyperparams(task) if with_args else []
        else:
            argv = taskenv.build_argv(built.env.python, built.workspace.entry_point, task, with_args)
        return env, argv
