"""Docker mode: each task in its own container (docs/docker.md).

    prepare: image (the task's container.image, its execution.docker_cmd, or the agent's default)
             + checkout and diff on this machine + an environment plan: a cache entry keyed by
             (image digest, interpreter, requirements, setup script), reused when complete
    start:   one container: [setup script] -> [build the venv with the mounted uv] -> entry point
    finish:  which phase it ended in (run/phase), the freeze list of a fresh build

Nothing of the agent is installed in the container: the code, the uv binary, the builder
(sandbox/container_build.py) and the caches are mounted. The container is labelled with the
worker and task ids, removed after the run, and reaped by `start_docker_mode` if the agent died.

Cached environments are shared, so a container never sees another task's entry writable
(issue 17, attack 4): one that reuses an entry gets it read-only; one that builds gets only its
own entry, uv's cache and the lock files writable, not the other entries, and uv copies out of
its cache (UV_LINK_MODE=copy) so the task's venv shares no inode with it. What remains: the
task whose container builds an entry runs with that entry writable (docs/docker.md).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from agent.execution import taskconf, taskenv
from agent.execution.build import git_credentials, task_requirements
from agent.execution.contract import ExitStatus, Prepared, RunContext, RunResult
from agent.execution.lifecycle import Outcome
from agent.execution.preempt import PREEMPT_FILE_ENV, PREEMPT_FILE_NAME
from sandbox import container_build, install_errors
from sandbox.docker_runner import (
    LABEL_ATTEMPT,
    LABEL_TASK,
    LABEL_WORKER,
    ContainerEnvCache,
    ContainerRun,
    ContainerSpec,
    DockerArgError,
    DockerEngine,
    DockerOptions,
    ImageError,
    ImageRef,
    Mount,
    env_key,
    parse_args,
)
from sandbox.git_workspace import Workspace, prepare_workspace
from sandbox.pyenv import find_uv
from sandbox.repo_cache import RepoCache
from sandbox.requirements import RequirementSet
from shipyard.client.config import DockerSettings, Settings
from shipyard.errors import ConfigError
from shipyard.protocol import OutcomeKind, TaskStatus

TASK_DIR = "/shipyard/task"
UV_PATH = "/shipyard/bin/uv"
BUILDER_PATH = "/shipyard/lib/container_build.py"
CA_PATH = "/shipyard/ca.pem"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
"""Passed from the agent's environment to every container."""
INSTALLER_VARS = ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_FIND_LINKS",
                  "UV_INDEX_STRATEGY", "UV_HTTP_TIMEOUT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")
"""Passed from the agent's environment to the environment build only."""
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


@dataclass(frozen=True)
class ContainerRequest:
    """What the task (or the agent's default) asks to run in."""

    image: str
    task_args: tuple[str, ...]
    """From the task: checked against agent.docker.allowed_args."""
    agent_args: tuple[str, ...]
    """The operator's: default_args (with the default image only) and extra_args."""
    setup_script: str
    source: str


@dataclass
class ContainerPlan:
    request: ContainerRequest
    image: ImageRef
    options: DockerOptions
    venv: str
    """The venv's path inside the container."""
    cache_key: str | None
    """None when the requirements cannot be shared (editable, local paths): built per task."""
    build: bool
    argv: list[str]
    workdir: str
    requirements: RequirementSet
    candidates: list[str]
    """Interpreters to look for in the image, in order."""


def container_request(task: dict, docker: DockerSettings) -> ContainerRequest:
    """The task's container fields, else its legacy execution.docker_cmd, else the agent's default."""
    container = task.get("container") or {}
    image = str(container.get("image") or "").strip()
    task_args = _split_args(container.get("arguments"))
    setup = str(container.get("setup_shell_script") or "")
    source = "the task's container.image"
    if not image:
        docker_cmd = _split_args((task.get("execution") or {}).get("docker_cmd"))
        if docker_cmd:
            image, task_args, source = docker_cmd[0], task_args or docker_cmd[1:], "the task's execution.docker_cmd"
    if image:
        return ContainerRequest(image, task_args, docker.extra_args, setup, source)
    if not docker.default_image:
        raise ImageError("the task names no container image and this agent has no default "
                         "(set agent.default_docker.image or run `shipyard daemon --docker IMAGE`)")
    return ContainerRequest(docker.default_image, task_args, docker.default_args + docker.extra_args, setup,
                            "the agent's default image")


def _split_args(value: object) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(item) for item in value if str(item).strip())
    try:
        return tuple(shlex.split(str(value or "")))
    except ValueError as exc:
        raise ImageError(f"the task's container arguments cannot be split into words: {exc}") from None


def container_options(request: ContainerRequest, docker: DockerSettings) -> DockerOptions:
    options = parse_args(request.agent_args, None, who="agent")
    return parse_args(request.task_args, docker.allowed_args, who="task", into=options)


def gpu_env(extra_env: dict[str, str], gpus: tuple[int, ...]) -> dict[str, str]:
    """Inside a container that was given GPUs 2,3, CUDA numbers them 0,1."""
    env = dict(extra_env)
    if gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpus)
        if "CUDA_VISIBLE_DEVICES" in env:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in range(len(gpus)))
    return env


def reachable_url(url: str, network: str) -> str:
    """On a bridge network, the host's localhost is host.docker.internal (mapped to the host gateway)."""
    if network == "host":
        return url
    parts = urlsplit(url)
    if parts.hostname not in _LOCAL_HOSTS:
        return url
    netloc = "host.docker.internal" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def python_candidates(script: dict, requirements: RequirementSet) -> list[str]:
    """The interpreters to look for in the image, in order (the builder takes the first present)."""
    wanted = []
    binary = str(script.get("binary") or "").strip()
    if re.search(r"python[\d.]*$", binary):
        wanted.append(binary)
    if requirements.python_hint:
        wanted.append("python" + ".".join(requirements.python_hint.split(".")[:2]))
    return list(dict.fromkeys([*wanted, "python3", "python"]))


class DockerExecutor:
    def __init__(self, context: RunContext, *, repo_cache: RepoCache | None = None,
                 engine: DockerEngine | None = None):
        self.context = context
        self.settings = context.settings
        self.docker = context.settings.agent.docker
        self.repo_cache = repo_cache or RepoCache(self.settings.agent.git_cache_dir)
        self.engine = engine or DockerEngine.connect()
        self.cache = ContainerEnvCache(_cache_root(self.settings))
        self.run_dir = context.target / "run"
        for path in self.cache.prepare():
            if self.docker.user:
                _chown(path, self.docker.user, recursive=False)

    # -- the executor's steps ----------------------------------------------------------------
    def prepare(self, task: dict) -> Prepared:
        note = self.context.note
        request = container_request(task, self.docker)
        options = container_options(request, self.docker)
        for line in options.notes:
            note(line)
        image = self.engine.image(request.image, force_pull=self.docker.force_pull, log=note)
        note(f"docker image {request.image} ({image.id[:19]}) from {request.source}")
        workspace, requirements = self._checkout(task)
        plan, frozen = self._plan(task, request, image, options, workspace, requirements)
        self._write_run_files(plan, workspace)
        return Prepared(workspace=workspace, frozen=frozen, detail=plan)

    def start(self, task: dict, prepared: Prepared) -> ContainerRun:
        plan: ContainerPlan = prepared.detail
        spec = ContainerSpec(
            image=plan.image, command=["/bin/sh", f"{TASK_DIR}/run/entry.sh"],
            name=f"shipyard-{self.context.task_id}-{secrets.token_hex(3)}", labels=self._labels(),
            environment=self._environment(task, plan), mounts=self._mounts(plan), working_dir=plan.workdir,
            options=plan.options, user=self.docker.user, network=self.docker.network, init=self.docker.init,
            gpus=self.context.gpus)
        run = self.engine.start(spec)
        self.context.note(f"running in container {spec.name}: " + " ".join(plan.argv))
        return run

    def finish(self, prepared: Prepared, launched: ContainerRun) -> RunResult:
        plan: ContainerPlan = prepared.detail
        info = launched.exit_info()
        status = ExitStatus(info.returncode, info.signalled, info.killed)
        frozen = self._read_lines(self.run_dir / "frozen.txt") if plan.build else None
        if info.error is not None:
            return RunResult(status, Outcome(TaskStatus.FAILED, OutcomeKind.INFRASTRUCTURE, f"lost track of the container: {info.error}"))
        phase = (self._read_lines(self.run_dir / "phase") or ["setup"])[0]
        failure = None if info.returncode == 0 else self._phase_failure(phase, info.returncode, plan)
        if failure is None and info.oom:
            failure = Outcome(TaskStatus.FAILED, OutcomeKind.USER_ERROR, "the container ran out of memory and the kernel killed the "
                              "task (raise --memory, or use less)", info.returncode)
        return RunResult(status, failure, frozen)

    def cleanup(self) -> None:
        self.engine.close()
        shutil.rmtree(self.context.target, ignore_errors=True)
        if self.context.target.exists():
            self.context.note(f"could not remove {self.context.target} completely (files the container created "
                              "as another user?)")

    # -- prepare's parts -------------------------------------------------------------------------
    def _checkout(self, task: dict) -> tuple[Workspace, RequirementSet]:
        target = self.context.target
        if target.exists():
            shutil.rmtree(target)
        self.run_dir.mkdir(parents=True)
        script = task.get("script") or {}
        workspace = prepare_workspace(script, target / "code", self.repo_cache, log=self.context.note,
                                      credentials=git_credentials(self.settings, str(script.get("repository") or "")))
        requirements, source = task_requirements(task, workspace, self.settings)
        requirements, replaced = requirements.without_missing_local_files(os.path.exists)
        for line in replaced:
            self.context.note(f"requirement '{line}' points at a file that is not on this machine; installing by name")
        self.context.note(f"requirements from {source}: {len(requirements.requirements)} entries")
        return workspace, requirements

    def _plan(self, task: dict, request: ContainerRequest, image: ImageRef, options: DockerOptions,
              workspace: Workspace, requirements: RequirementSet) -> tuple[ContainerPlan, list[str] | None]:
        script = task.get("script") or {}
        candidates = python_candidates(script, requirements)
        uncacheable = requirements.uncacheable_reason()
        frozen = None
        if uncacheable:
            self.context.note(f"environment not cached: {uncacheable}")
            key, venv = None, f"{TASK_DIR}/venv"
        else:
            key = env_key(image.id, candidates, requirements.canonical(), request.setup_script)
            venv = self.cache.inside(self.cache.entry(key) / "venv")
            frozen = self.cache.frozen(key)
            self.context.note(f"environment {key[:12]} " + ("ready (cache hit)" if frozen is not None else
                                                            "will be built in the container"))
        python = Path(venv) / "bin" / "python"
        entry = self._inside(workspace.entry_point)
        with_args = not taskenv.uses_sdk(workspace.entry_point, [r.line for r in requirements.requirements])
        if workspace.module:
            argv = [str(python), "-m", workspace.module] + (taskenv.args_from_hyperparams(task) if with_args else [])
        else:
            argv = taskenv.build_argv(python, Path(entry), task, with_args)
        plan = ContainerPlan(request=request, image=image, options=options, venv=venv, cache_key=key,
                             build=frozen is None, argv=argv, workdir=self._inside(workspace.working_dir),
                             requirements=requirements, candidates=candidates)
        return plan, frozen

    def _write_run_files(self, plan: ContainerPlan, workspace: Workspace) -> None:
        run = self.run_dir
        if plan.request.setup_script.strip():
            (run / "setup.sh").write_text(plan.request.setup_script.replace("\r\n", "\n") + "\n")
        if plan.build:
            (run / "requirements.txt").write_text("\n".join(plan.requirements.install_lines()) + "\n")
            (run / "build.json").write_text(json.dumps(self._build_spec(plan, workspace), indent=1))
            if plan.cache_key:  # the mount point of the entry it builds, and nothing else of envs/
                self.cache.entry(plan.cache_key).mkdir(exist_ok=True)
                if self.docker.user:
                    _chown(self.cache.entry(plan.cache_key), self.docker.user, recursive=False)
        (run / "entry.sh").write_text(entry_script(self.context.task_id, plan))
        taskconf.write_task_config(self.context.target, self.context.settings.sdk, self._connection())
        if self.docker.user:
            (self.context.target / "home").mkdir(exist_ok=True)
            _chown(self.context.target, self.docker.user, recursive=True)

    def _build_spec(self, plan: ContainerPlan, workspace: Workspace) -> dict:
        entry = self.cache.entry(plan.cache_key) if plan.cache_key else None
        env = {"UV_CACHE_DIR": f"{self.cache.mount_point}/uv", "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy",
               "UV_NO_PROGRESS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
               **{name: os.environ[name] for name in INSTALLER_VARS if os.environ.get(name)}}
        if self._ca_bundle():
            env.update(SSL_CERT_FILE=CA_PATH, PIP_CERT=CA_PATH)
        return {
            "venv": plan.venv, "entry": self.cache.inside(entry) if entry else None,
            "lock": self.cache.inside(self.cache.root / "locks" / f"{plan.cache_key}.lock") if entry else None,
            "label": (plan.cache_key or "per-task")[:12], "requirements": f"{TASK_DIR}/run/requirements.txt",
            "lines": len(plan.requirements.requirements), "candidates": plan.candidates,
            "uv": UV_PATH if self._uv() else None,
            "cwd": self._inside(workspace.working_dir), "result": f"{TASK_DIR}/run/build-result.json",
            "frozen": f"{TASK_DIR}/run/frozen.txt", "env": env,
        }

    # -- start's parts ---------------------------------------------------------------------------
    def _labels(self) -> dict[str, str]:
        return {LABEL_WORKER: self.settings.agent.worker_id, LABEL_TASK: self.context.task_id,
                LABEL_ATTEMPT: str(self.context.attempt if self.context.attempt is not None else "")}

    def _connection(self) -> taskenv.Connection:
        """The run's connection with the servers' addresses as the container reaches them."""
        network = self.docker.network
        conn = self.context.connection
        return taskenv.Connection(reachable_url(conn.api_server, network), reachable_url(conn.files_server, network),
                                  reachable_url(conn.web_server, network), conn.access_key, conn.secret_key,
                                  conn.worker_id)

    def _environment(self, task: dict, plan: ContainerPlan) -> dict[str, str]:
        conn = self._connection()
        base = {"PATH": plan.image.path, **{name: os.environ[name] for name in PROXY_VARS if name in os.environ}}
        env = taskenv.build_env(base, conn, self.context.task_id, Path(plan.venv),
                                gpu_env(dict(self.context.extra_env), self.context.gpus),
                                taskenv.task_env_section(task))
        env["CLEARML_PROC_MASTER_ID"] = f"1:{self.context.task_id}"  # PID 1: the container's init, alive throughout
        env["CLEARML_DOCKER_IMAGE"] = plan.request.image
        env["CLEARML_CONFIG_FILE"] = f"{TASK_DIR}/{taskconf.FILE_NAME}"  # written by _write_run_files
        env[PREEMPT_FILE_ENV] = f"{TASK_DIR}/{PREEMPT_FILE_NAME}"   # the run's directory, mounted
        if self.docker.user:
            env["HOME"] = f"{TASK_DIR}/home"
        return env

    def _mounts(self, plan: ContainerPlan) -> list[Mount]:
        mounts = [Mount(self.context.target, TASK_DIR, read_only=False)]
        if plan.build:
            shared = [self.cache.root / "uv", self.cache.root / "locks"]
            if plan.cache_key:
                shared.append(self.cache.entry(plan.cache_key))
            mounts += [Mount(path, self.cache.inside(path), read_only=False) for path in shared]
            mounts.append(Mount(Path(container_build.__file__), BUILDER_PATH))
            uv, ca_bundle = self._uv(), self._ca_bundle()
            if uv:
                mounts.append(Mount(uv, UV_PATH))
            if ca_bundle:
                mounts.append(Mount(ca_bundle, CA_PATH))
        elif plan.cache_key:
            entry = self.cache.entry(plan.cache_key)
            mounts.append(Mount(entry, self.cache.inside(entry)))
        return mounts

    # -- helpers ---------------------------------------------------------------------------------
    def _uv(self) -> Path | None:
        return self.docker.uv_binary or find_uv()

    def _ca_bundle(self) -> Path | None:
        bundle = self.docker.ca_bundle
        return bundle.resolve() if bundle and bundle.is_file() else None

    def _inside(self, path: Path) -> str:
        return f"{TASK_DIR}/{path.relative_to(self.context.target)}"

    @staticmethod
    def _read_lines(path: Path) -> list[str] | None:
        try:
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except OSError:
            return None

    def _phase_failure(self, phase: str, code: int, plan: ContainerPlan) -> Outcome | None:
        if phase == "setup":
            return Outcome(TaskStatus.FAILED, OutcomeKind.SETUP_SCRIPT, f"the container's setup script exited with code {code}; "
                           "see the console log", code)
        if phase != "environment":
            return None
        try:
            result = json.loads((self.run_dir / "build-result.json").read_text())
        except (OSError, ValueError):
            if code == 127:
                return Outcome(TaskStatus.FAILED, OutcomeKind.IMAGE, f"image {plan.request.image} has no python3 or python on its PATH",
                               code)
            return Outcome(TaskStatus.FAILED, OutcomeKind.INFRASTRUCTURE, f"the environment build in the container ended with code {code}",
                           code)
        return _build_failure(result, plan)


def _build_failure(result: dict, plan: ContainerPlan) -> Outcome:
    stage, output = result.get("stage", ""), str(result.get("output", ""))
    if stage == "install":
        if install_errors.classify(output) == "network":
            return Outcome(TaskStatus.FAILED, OutcomeKind.INFRASTRUCTURE, install_errors.network_error(output).reason)
        return Outcome(TaskStatus.FAILED, OutcomeKind.REQUIREMENTS, install_errors.requirements_error(output, plan.requirements).reason)
    if stage in ("interpreter", "venv"):
        return Outcome(TaskStatus.FAILED, OutcomeKind.IMAGE, f"image {plan.request.image} cannot make a Python environment: "
                       f"{install_errors.reason(output)}")
    return Outcome(TaskStatus.FAILED, OutcomeKind.INFRASTRUCTURE, f"the environment build failed ({stage}): {install_errors.reason(output)}")


def entry_script(task_id: str, plan: ContainerPlan) -> str:
    """The container's command: setup script, environment build (when needed), entry point."""
    lines = [
        "#!/bin/sh",
        f"# Written by shipyard for task {task_id}: setup script, environment, entry point.",
        f"run={TASK_DIR}/run",
        'echo setup > "$run/phase"',
        'if [ -f "$run/setup.sh" ]; then',
        '  echo "shipyard: running the container setup script"',
        '  if command -v bash >/dev/null 2>&1; then bash "$run/setup.sh"; else sh "$run/setup.sh"; fi',
        '  code=$?',
        '  if [ "$code" -ne 0 ]; then echo "shipyard: the setup script exited with code $code" >&2; exit "$code"; fi',
        'fi',
        'echo environment > "$run/phase"',
    ]
    if plan.build:
        lines += [
            'py=$(command -v python3 || command -v python) || {',
            '  echo "shipyard: the image has no python3 or python on its PATH" >&2; exit 127; }',
            f'"$py" {BUILDER_PATH} "$run/build.json" || exit $?',
        ]
    lines += ['echo run > "$run/phase"', f"cd {shlex.quote(plan.workdir)} || exit 1",
              "exec " + " ".join(shlex.quote(part) for part in plan.argv), ""]
    return "\n".join(lines)


def _cache_root(settings: Settings) -> Path:
    """One cache per container user: files a build writes belong to the user that runs the tasks."""
    user = settings.agent.docker.user
    return settings.agent.cache_dir / ("docker" if not user else f"docker-{user.replace(':', '-')}")


def _chown(root: Path, user: str, *, recursive: bool) -> None:
    """Hand what a container running as `user` (numeric uid[:gid]) writes to over to it."""
    uid_text, _, gid_text = user.partition(":")
    if os.geteuid() != 0 or not uid_text.isdigit() or (gid_text and not gid_text.isdigit()):
        return  # not ours to give, or a user name only the image can resolve (docs/docker.md: use uid[:gid])
    uid, gid = int(uid_text), int(gid_text or uid_text)
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root) if recursive else ():
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


# -- the daemon's side ----------------------------------------------------------------------------


def start_docker_mode(settings: Settings, log=print) -> list[str]:
    """Before the daemon takes tasks: the engine answers, the operator's arguments parse, and
    containers this worker left behind (a crash, kill -9) are removed; returns their names.
    Raises ConfigError or InfrastructureError for the daemon to exit with."""
    docker = settings.agent.docker
    try:
        parse_args(docker.default_args + docker.extra_args, None, who="agent")
    except DockerArgError as exc:
        raise ConfigError(f"agent.docker arguments: {exc.reason}") from None
    engine = DockerEngine.connect()
    try:
        return engine.reap({LABEL_WORKER: settings.agent.worker_id}, log=log)
    finally:
        engine.close()
