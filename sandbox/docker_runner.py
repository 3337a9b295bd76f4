"""Container mechanics for docker mode, through the Docker SDK for Python (never shell strings).

    engine = DockerEngine.connect()
    image = engine.image("python:3.11-slim", force_pull=False)      # ImageRef: id, PATH
    options = parse_args(["--shm-size", "2g"], allowed=("--shm-size",))
    run = engine.start(ContainerSpec(image=image, command=[...], ..., options=options))
    # run.stdout_fd / run.stderr_fd: pipes fed from the container's output
    run.wait(0.1); run.terminate(grace_s); run.exit_info(); run.close()
    engine.reap({"shipyard.worker": "host:0"})                       # leftovers of a crashed agent

`parse_args` turns `docker run` arguments into create() keyword arguments. Options outside an
allow-list are refused with a reason; options that would take the container out of the agent's
hands (--entrypoint, --workdir, --rm, --name...) are refused or ignored for everyone.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests

from shipyard.errors import InfrastructureError, TaskError

Log = Callable[[str], None]

LABEL_WORKER, LABEL_TASK, LABEL_ATTEMPT = "shipyard.worker", "shipyard.task", "shipyard.attempt"
API_TIMEOUT_S = 60
"""Seconds for one Docker API call (attach and wait, which last as long as the task, have none)."""
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class DockerArgError(TaskError):
    kind = "docker_args"


class ImageError(TaskError):
    kind = "image"


# --- docker run arguments -------------------------------------------------------------------


def _env(kw: dict, value: str) -> None:
    if "=" not in value:
        raise ValueError("needs NAME=value (passing the agent's own variable through is not supported)")
    kw.setdefault("environment", []).append(value)


def _label(kw: dict, value: str) -> None:
    name, _, text = value.partition("=")
    if name.startswith("shipyard."):
        raise ValueError("shipyard.* labels are the agent's")
    kw.setdefault("labels", {})[name] = text


def _ulimit(kw: dict, value: str) -> None:
    name, _, limits = value.partition("=")
    soft, _, hard = limits.partition(":")
    kw.setdefault("ulimits", []).append(docker.types.Ulimit(name=name, soft=int(soft), hard=int(hard or soft)))


def _tmpfs(kw: dict, value: str) -> None:
    path, _, opts = value.partition(":")
    kw.setdefault("tmpfs", {})[path] = opts


def _host(kw: dict, value: str) -> None:
    name, _, address = value.partition(":")
    kw.setdefault("extra_hosts", {})[name] = address


def _gpus(kw: dict, value: str) -> None:
    kw.setdefault("device_requests", []).append(gpu_request(value))


def _set(key: str, cast: Callable[[str], Any] = str) -> Callable[[dict, str], None]:
    def apply(kw: dict, value: str) -> None:
        kw[key] = cast(value)
    return apply


def _append(key: str) -> Callable[[dict, str], None]:
    def apply(kw: dict, value: str) -> None:
        kw.setdefault(key, []).append(value)
    return apply


def _flag(key: str) -> Callable[[dict, str], None]:
    def apply(kw: dict, _value: str) -> None:
        kw[key] = True
    return apply


_WITH_VALUE: dict[str, Callable[[dict, str], None]] = {
    "--env": _env, "--label": _label, "--shm-size": _set("shm_size"), "--memory": _set("mem_limit"),
    "--memory-swap": _set("memswap_limit"), "--cpus": _set("nano_cpus", lambda v: int(float(v) * 1e9)),
    "--cpu-shares": _set("cpu_shares", int), "--cpuset-cpus": _set("cpuset_cpus"), "--ulimit": _ulimit,
    "--pids-limit": _set("pids_limit", int), "--tmpfs": _tmpfs, "--ipc": _set("ipc_mode"),
    "--network": _set("network_mode"), "--volume": _append("volumes"), "--device": _append("devices"),
    "--gpus": _gpus, "--cap-add": _append("cap_add"), "--cap-drop": _append("cap_drop"),
    "--security-opt": _append("security_opt"), "--user": _set("user"), "--runtime": _set("runtime"),
    "--hostname": _set("hostname"), "--add-host": _host, "--group-add": _append("group_add"),
    "--sysctl": lambda kw, v: kw.setdefault("sysctls", {}).__setitem__(*v.split("=", 1)),
}
_FLAGS = {"--privileged": _flag("privileged"), "--read-only": _flag("read_only"), "--init": _flag("init")}
_ALIASES = {"-e": "--env", "-l": "--label", "-m": "--memory", "-v": "--volume", "-u": "--user",
            "-h": "--hostname", "--net": "--network"}
_IGNORED_FLAGS = {"--rm", "-t", "--tty", "-i", "--interactive", "-it", "-ti", "-d", "--detach"}
_IGNORED_WITH_VALUE = {"--name"}
_REFUSED = {"--entrypoint": "the agent runs its own entry point", "--workdir": "the agent sets the working directory",
            "-w": "the agent sets the working directory", "--mount": "use --volume"}


@dataclass
class DockerOptions:
    kwargs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def canonical_option(name: str) -> str:
    return _ALIASES.get(name, name)


def parse_args(args: Sequence[str], allowed: Collection[str] | None = None, *, who: str = "task",
               into: DockerOptions | None = None) -> DockerOptions:
    """`docker run` arguments as create() keyword arguments. With `allowed` (an allow-list of
    options or option=value pairs), anything else raises DockerArgError naming it."""
    options = into or DockerOptions()
    permitted = None if allowed is None else _allow_set(allowed)
    items = list(args)
    while items:
        raw = items.pop(0)
        name, has_value, value = raw.partition("=") if raw.startswith("--") else (raw, "", "")
        name = canonical_option(name)
        if name in _IGNORED_FLAGS:
            options.notes.append(f"ignoring {raw} ({who} argument): the agent manages the container")
            continue
        _check_known(name, raw, who)
        value = _option_value(name, raw, has_value, value, items)
        if name in _IGNORED_WITH_VALUE:
            options.notes.append(f"ignoring {name} {value} ({who} argument): the agent names its containers")
            continue
        _check_permitted(name, value, permitted, allowed)
        try:
            (_FLAGS.get(name) or _WITH_VALUE[name])(options.kwargs, value)
        except (ValueError, TypeError) as exc:
            raise DockerArgError(f"docker argument {name} {value}: {exc}") from None
    return options


def _check_known(name: str, raw: str, who: str) -> None:
    """DockerArgError unless `name` is an option Shipyard supports (or knowingly ignores)."""
    if name in _REFUSED:
        raise DockerArgError(f"docker argument {raw} is not supported: {_REFUSED[name]}")
    if name not in _WITH_VALUE and name not in _FLAGS and name not in _IGNORED_WITH_VALUE:
        raise DockerArgError(f"docker argument {raw!r} ({who}) is not one Shipyard understands; "
                             "see docs/docker.md for the supported options")


def _option_value(name: str, raw: str, has_value: str, value: str, items: list[str]) -> str:
    """The option's value: "true" for a flag, the `=value` part, or the next argument (consumed)."""
    if name in _FLAGS:
        return "true"
    if has_value:
        return value
    if not items:
        raise DockerArgError(f"docker argument {raw} needs a value")
    return items.pop(0)


def _check_permitted(name: str, value: str, permitted: set[str] | None, allowed: Collection[str] | None) -> None:
    """DockerArgError when an allow-list is set and neither the option nor option=value is on it."""
    if permitted is not None and name not in permitted and f"{name}={value}" not in permitted:
        raise DockerArgError(f"docker argument {name}{'' if name in _FLAGS else ' ' + value} is not allowed "
                             f"for tasks on this agent (allowed: {', '.join(sorted(allowed or ())) or 'none'}; "
                             "the operator can extend agent.docker.allowed_args)")


def _allow_set(allowed: Collection[str]) -> set[str]:
    found = set()
    for entry in allowed:
        name, eq, value = entry.partition("=")
        found.add(canonical_option(name) + (f"={value}" if eq else ""))
    return found


def gpu_request(value: str) -> docker.types.DeviceRequest:
    """`--gpus` syntax: all, a count, or device=0,1."""
    value = value.strip().strip('"')
    if value == "all":
        return docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])
    if value.startswith("device="):
        return docker.types.DeviceRequest(device_ids=value[len("device="):].split(","), capabilities=[["gpu"]])
    return docker.types.DeviceRequest(count=int(value), capabilities=[["gpu"]])


def device_request(gpus: Sequence[int]) -> docker.types.DeviceRequest:
    return docker.types.DeviceRequest(device_ids=[str(gpu) for gpu in gpus], capabilities=[["gpu"]])


# --- images and containers --------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    name: str
    id: str
    """The image's content digest (sha256:...): part of the environment cache key."""
    path: str
    """The image's PATH, which the container's environment extends."""


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass
class ContainerSpec:
    image: ImageRef
    command: list[str]
    name: str
    labels: dict[str, str]
    environment: dict[str, str]
    mounts: list[Mount]
    working_dir: str
    options: DockerOptions
    user: str | None = None
    network: str = "host"
    init: bool = True
    gpus: tuple[int, ...] = ()

    def create_kwargs(self) -> dict[str, Any]:
        kw = dict(self.options.kwargs)
        env = [*kw.pop("environment", []), *(f"{k}={v}" for k, v in self.environment.items())]
        kw.setdefault("network_mode", self.network)
        if kw["network_mode"] != "host":
            kw.setdefault("extra_hosts", {}).setdefault("host.docker.internal", "host-gateway")
        if self.gpus:
            kw["device_requests"] = [*kw.get("device_requests", []), device_request(self.gpus)]
        if self.user:
            kw["user"] = self.user
        kw.setdefault("init", self.init)
        kw.update(image=self.image.id, command=self.command, name=self.name, environment=env,
                  labels={**kw.get("labels", {}), **self.labels}, working_dir=self.working_dir, detach=True,
                  mounts=[docker.types.Mount(m.target, str(m.source), type="bind", read_only=m.read_only)
                          for m in self.mounts])
        return kw


class DockerEngine:
    def __init__(self, client: docker.DockerClient, stream_client: docker.DockerClient):
        self.client = client
        self.stream_client = stream_client

    @classmethod
    def connect(cls) -> DockerEngine:
        try:
            client = docker.from_env(timeout=API_TIMEOUT_S)
            client.ping()
            return cls(client, docker.from_env(timeout=None))  # type: ignore[arg-type]  # None: no read timeout on the attach stream; the stubs allow only int
        except (docker.errors.DockerException, requests.RequestException) as exc:
            raise InfrastructureError(f"cannot reach the Docker engine: {exc}", kind="docker_unavailable") from None

    def image(self, name: str, *, force_pull: bool = False, log: Log = print) -> ImageRef:
        """The image, pulled when missing (or always with force_pull). ImageError if it cannot be had."""
        try:
            if force_pull:
                return self._pull(name, log)
            try:
                return _image_ref(name, self.client.images.get(name))
            except docker.errors.ImageNotFound:
                return self._pull(name, log)
        except docker.errors.APIError as exc:
            raise ImageError(f"docker image {name!r} is not on this machine and could not be pulled: "
                             f"{_explain(exc)}") from None
        except requests.RequestException as exc:
            raise InfrastructureError(f"the Docker engine did not answer: {exc}", kind="docker_unavailable") from None

    def _pull(self, name: str, log: Log) -> ImageRef:
        log(f"pulling docker image {name}")
        return _image_ref(name, self.client.images.pull(name))  # the SDK splits repository, tag and digest

    def start(self, spec: ContainerSpec) -> ContainerRun:
        try:
            container = self.client.containers.create(**spec.create_kwargs())
        except docker.errors.APIError as exc:
            raise _start_error(spec, exc) from None
        assert container.id is not None  # the engine names every container it creates
        try:  # attached before it starts, so not a byte of output is missed
            stream = self.stream_client.api.attach(container.id, stdout=True, stderr=True, stream=True,
                                                   logs=True, demux=True)
        except docker.errors.APIError as exc:
            _remove(container)
            raise _start_error(spec, exc) from None
        run = ContainerRun(container, stream, self.stream_client)
        try:
            container.start()
        except docker.errors.APIError as exc:
            run.close()
            raise _start_error(spec, exc) from None
        run.watch()
        return run

    def close(self) -> None:
        self.client.close()
        self.stream_client.close()

    def reap(self, labels: dict[str, str], log: Log = print) -> list[str]:
        """Remove every container carrying `labels` (running or not); return their names."""
        found = self.client.containers.list(all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        for container in found:
            log(f"removing leftover container {container.name} (task {container.labels.get(LABEL_TASK, '?')}, "
                f"{container.status})")
            _remove(container)
        return [str(container.name) for container in found]


def _image_ref(name: str, image: Any) -> ImageRef:
    env = dict(item.split("=", 1) for item in (image.attrs.get("Config") or {}).get("Env") or [] if "=" in item)
    return ImageRef(name=name, id=image.id, path=env.get("PATH", DEFAULT_PATH))


def _explain(exc: docker.errors.APIError) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _start_error(spec: ContainerSpec, exc: docker.errors.APIError) -> Exception:
    text = _explain(exc)
    if "executable file not found" in text or "no such file or directory" in text.lower():
        return ImageError(f"image {spec.image.name} cannot run the agent's entry script "
                          f"({spec.command[0]} missing?): {text}")
    if exc.status_code is not None and exc.status_code < 500:
        return DockerArgError(f"the container could not be created: {text}")
    return InfrastructureError(f"the Docker engine could not start the container: {text}", kind="docker_failed")


def _remove(container: Any) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True, v=True)


@dataclass
class ContainerExit:
    returncode: int
    signalled: int | None
    killed: bool
    oom: bool
    error: str | None = None
    """The engine failed while we waited (the exit code is then unknown, -1)."""


class ContainerRun:
    """A started container: its output pumped into two pipes, its exit awaited in a thread."""

    def __init__(self, container: Any, stream: Any, stream_client: docker.DockerClient):
        self.container = container
        self._stream = stream
        self._stream_client = stream_client
        self.stdout_fd, out_w = os.pipe()
        self.stderr_fd, err_w = os.pipe()
        self._pump = threading.Thread(target=self._copy, args=(out_w, err_w), daemon=True,
                                      name=f"docker-out-{container.short_id}")
        self._pump.start()
        self._done = threading.Event()
        self._exit: ContainerExit | None = None
        self.killed = False

    def watch(self) -> None:
        threading.Thread(target=self._wait, daemon=True, name=f"docker-wait-{self.container.short_id}").start()

    def _copy(self, out_w: int, err_w: int) -> None:
        try:
            for out, err in self._stream:
                for fd, chunk in ((out_w, out), (err_w, err)):
                    while chunk:
                        chunk = chunk[os.write(fd, chunk):]
        except (OSError, requests.RequestException, docker.errors.DockerException):
            pass  # the engine went away: the wait thread reports it
        finally:
            os.close(out_w)
            os.close(err_w)

    def _wait(self) -> None:
        try:
            code = int(self._stream_client.api.wait(self.container.id)["StatusCode"])
            self.container.reload()
            oom = bool(self.container.attrs.get("State", {}).get("OOMKilled"))
            signalled = code - 128 if 128 < code <= 128 + 64 else None
            self._exit = ContainerExit(code, signalled, self.killed and code == 137, oom)
        except (docker.errors.DockerException, requests.RequestException) as exc:
            self._exit = ContainerExit(-1, None, self.killed, False, error=str(exc))
        self._done.set()

    def wait(self, timeout: float | None = None) -> int | None:
        if not self._done.wait(timeout):
            return None
        assert self._exit is not None
        return self._exit.returncode

    def terminate(self, grace_s: float) -> None:
        """SIGTERM (to the init process, which forwards it), `grace_s`, then SIGKILL: docker stop."""
        self.killed = True
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            self.container.stop(timeout=max(1, math.ceil(grace_s)))
        self._done.wait(30)

    def signal(self, signum: int) -> None:
        """One signal to the container's init, which forwards it to the task (a preemption notice)."""
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            self.container.kill(signal=signum)

    def reap(self) -> None:
        """The container's processes all end with it; nothing lives on."""

    def exit_info(self) -> ContainerExit:
        self._done.wait()
        assert self._exit is not None
        return self._exit

    def close(self) -> None:
        """Remove the container and close our ends of the pipes (after the readers are done)."""
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            _remove(self.container)  # else reaped when the agent next starts
        self._pump.join(5)
        for fd in (self.stdout_fd, self.stderr_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


# --- the environment cache, shared by containers through a mount ------------------------------


ENV_KEY_VERSION = 1


def env_key(image_id: str, candidates: Sequence[str], requirements: str, setup_script: str) -> str:
    """An environment is reused only for the same image, interpreter choice, requirements and setup."""
    material = {"version": ENV_KEY_VERSION, "image": image_id, "python": list(candidates),
                "requirements": requirements, "setup": setup_script, "system_site_packages": True}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class ContainerEnvCache:
    """Environments built inside containers, kept on the host under `root`:

        root/uv/                 uv's cache
        root/envs/<key>/venv/    the environment; COMPLETE and meta.json written last
        root/locks/<key>.lock    flock held by the container building it

    A container that builds gets `root` mounted read-write at the same place (`mount_point`), so
    uv hard-links from its cache; one that reuses an entry gets only the entry, read-only.
    """

    mount_point = "/shipyard/cache"

    def __init__(self, root: Path):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / "envs" / key

    def inside(self, path: Path) -> str:
        return f"{self.mount_point}/{path.relative_to(self.root)}"

    def frozen(self, key: str) -> list[str] | None:
        """The entry's freeze list when it is complete (touching its last-used clock), else None."""
        entry = self.entry(key)
        if not (entry / "COMPLETE").is_file():
            return None
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        (entry / "last-used").touch()
        return list(meta.get("frozen") or [])

    def prepare(self) -> list[Path]:
        """Create the layout; returns its directories (for a caller that hands them to a user)."""
        made = [self.root, *(self.root / sub for sub in ("uv", "envs", "locks"))]
        for path in made:
            path.mkdir(parents=True, exist_ok=True)
        return made
