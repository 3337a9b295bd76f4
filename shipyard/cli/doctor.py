"""`shipyard doctor`: is this machine ready to run the agent? One line per check.

    config        the agent's settings load (file, environment); which clearml.conf, and why that one
    git           git is installed (tasks are checked out with it)
    python        interpreters tasks can ask for (python3.8 ... python3.14 on PATH, and the agent's own)
    uv            uv for fast installs (else the agent falls back to virtualenv + pip)
    docker        a Docker engine answers (only docker mode needs one)
    nvml          NVIDIA GPUs through NVML (optional: pynvml absent or no driver = CPU-only)
    work dir      writable, with free space
    server        the API server answers debug.ping
    credentials   auth.login accepts the configured key
    clock         this clock against the server's Date header

Each check ends `ok`, `warn`, `skip` (not applicable here) or `fail`; the command exits 1 when
any check failed, else 0, so it can gate a provisioning script.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable

import click
import requests

from sandbox.pyenv import find_uv, probe
from shipyard.cli.state import state_of
from shipyard.client.api import ApiClient
from shipyard.client.config import Settings
from shipyard.errors import ConfigError, ShipyardError

OK, WARN, SKIP, FAIL = "ok", "warn", "skip", "fail"
HTTP_TIMEOUT_S = 5.0
SKEW_WARN_S = 5.0     # Date headers have one-second resolution; more than this is a real offset
SKEW_FAIL_S = 120.0   # beyond this, token expiry and lease times read wrong on one side
FREE_WARN_BYTES = 5 * 1024**3
DOCKER_SOCKET = Path("/var/run/docker.sock")
PYTHONS = tuple(f"python3.{minor}" for minor in range(8, 15))


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def run_checks(settings: Settings | None, config_error: str | None = None) -> list[Check]:
    checks = [Check("config", FAIL, config_error or "") if settings is None else _config_check(settings)]
    checks += [_guard(name, probe_fn) for name, probe_fn in (
        ("git", check_git), ("python", check_pythons), ("uv", check_uv), ("docker", check_docker),
        ("nvml", check_nvml))]
    if settings is not None:
        checks.append(_guard("work dir", lambda: check_work_dir(settings.agent.work_dir)))
        checks += check_server(settings)
    return checks


def _config_check(settings: Settings) -> Check:
    """Which clearml.conf the commands read, and why that one (`find_config_file`)."""
    used = (f"config file {settings.config_file} ({settings.config_reason})" if settings.config_file
            else f"no config file ({settings.config_reason})")
    return Check("config", OK, f"{used}; worker {settings.agent.worker_id}"
                 + "".join(f"; {w}" for w in settings.warnings))


def _guard(name: str, probe_fn: Callable[[], Check]) -> Check:
    """A check that crashes is a failed check, not a crashed doctor."""
    try:
        return probe_fn()
    except Exception as exc:  # noqa: BLE001 - reported as the check's outcome
        return Check(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}")


def _version(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else None


def check_git() -> Check:
    path = shutil.which("git")
    version = _version([path, "--version"]) if path else None
    if version is None:
        return Check("git", FAIL, "git not found on PATH: tasks with a repository cannot be checked out")
    return Check("git", OK, f"{version} ({path})")


def check_pythons() -> Check:
    paths = [sys.executable, *filter(None, map(shutil.which, PYTHONS))]
    with ThreadPoolExecutor(max_workers=4) as pool:  # each probe starts an interpreter
        own, *others = pool.map(probe, paths)
    if own is None:
        return Check("python", FAIL, f"the agent's own interpreter {sys.executable} does not run")
    found: dict[str, str] = {}
    for interpreter in (own, *others):
        if interpreter is not None:
            found.setdefault(interpreter.short_version, str(interpreter.path))
    listing = ", ".join(f"{version} ({path})" for version, path in sorted(found.items(), key=_version_key))
    return Check("python", OK, listing)


def _version_key(item: tuple[str, str]) -> tuple[int, ...]:
    return tuple(int(part) for part in item[0].split(".") if part.isdigit())


def check_uv() -> Check:
    path = find_uv()
    version = _version([str(path), "--version"]) if path else None
    if version is None:
        return Check("uv", WARN, "uv not found: environments are built with virtualenv + pip (slower)")
    return Check("uv", OK, f"{version} ({path})")


def check_docker() -> Check:
    """The engine through the Docker SDK when installed, else a bare /_ping on the default socket."""
    try:
        import docker
    except ImportError:
        return _ping_socket(DOCKER_SOCKET)
    try:
        client = docker.from_env(timeout=int(HTTP_TIMEOUT_S))
        info = client.version()
        client.close()
        return Check("docker", OK, f"engine {info.get('Version')} (API {info.get('ApiVersion')})")
    except Exception as exc:  # noqa: BLE001 - docker.errors.* and requests' errors alike
        return Check("docker", SKIP, f"no Docker engine answers ({exc}); docker mode unavailable")


def _ping_socket(path: Path) -> Check:
    if not path.exists():
        return Check("docker", SKIP, f"no Docker engine ({path} absent); docker mode unavailable, venv mode works")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(HTTP_TIMEOUT_S)
            sock.connect(str(path))
            sock.sendall(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except PermissionError:
        return Check("docker", WARN, f"{path} exists but this user may not use it (add it to the socket's group)")
    except OSError as exc:
        return Check("docker", WARN, f"{path} does not answer: {exc}")
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        version = json.loads(body).get("Version", "?")
    except ValueError:
        version = "?"
    status = OK if head.split(b" ", 2)[1:2] == [b"200"] else WARN
    return Check("docker", status, f"engine {version} at {path}")


def check_nvml() -> Check:
    try:
        import pynvml
    except ImportError:
        return Check("nvml", SKIP, "pynvml not installed (pip install nvidia-ml-py): GPUs not inspected")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return Check("nvml", SKIP, f"NVML unavailable ({exc}): no NVIDIA driver, tasks run CPU-only")
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                 for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()
    text = lambda value: value.decode() if isinstance(value, bytes) else str(value)  # noqa: E731
    gpus = ", ".join(f"{i}: {text(name)}" for i, name in enumerate(names)) or "no GPUs"
    return Check("nvml", OK, f"driver {text(driver)}; {gpus}")


def check_work_dir(work_dir: Path) -> Check:
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe_file = work_dir / ".doctor-probe"
        probe_file.write_text("ok")
        probe_file.unlink()
    except OSError as exc:
        return Check("work dir", FAIL, f"{work_dir} is not writable: {exc}")
    free = shutil.disk_usage(work_dir).free
    status = WARN if free < FREE_WARN_BYTES else OK
    return Check("work dir", status, f"{work_dir}: {free / 1024**3:.1f} GiB free")


def check_server(settings: Settings) -> list[Check]:
    """Reachability (debug.ping), credentials (auth.login) and clock skew (the answer's Date header)."""
    url = f"{settings.api.api_server}/debug.ping"
    before = time.time()
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT_S, verify=settings.api.verify_ssl)
    except requests.RequestException as exc:
        return [Check("server", FAIL, f"{settings.api.api_server} unreachable: {exc}")]
    after = time.time()
    reach = Check("server", OK if response.ok else FAIL,
                  f"{settings.api.api_server} answered debug.ping in {(after - before) * 1000:.0f} ms"
                  + ("" if response.ok else f" with HTTP {response.status_code}"))
    return [reach, _check_credentials(settings), clock_skew(response.headers.get("Date"), before, after)]


def _check_credentials(settings: Settings) -> Check:
    if not settings.api.access_key or not settings.api.secret_key:
        return Check("credentials", FAIL, "no API credentials configured (shipyard init writes them)")
    try:
        with ApiClient.from_settings(settings, retry_deadline_s=HTTP_TIMEOUT_S, timeout=HTTP_TIMEOUT_S) as api:
            api.login()
    except ShipyardError as exc:
        return Check("credentials", FAIL, str(exc))
    return Check("credentials", OK, f"auth.login accepted access key {settings.api.access_key[:6]}...")


def clock_skew(date_header: str | None, sent: float, received: float) -> Check:
    """Server time minus local time, against the middle of the request's round trip."""
    if not date_header:
        return Check("clock", SKIP, "the server sent no Date header")
    try:
        server_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return Check("clock", WARN, f"unreadable Date header {date_header!r}")
    # Date is truncated to the second: the server's true time lies in [t, t+1).
    skew = server_time + 0.5 - (sent + received) / 2
    status = FAIL if abs(skew) > SKEW_FAIL_S else WARN if abs(skew) > SKEW_WARN_S else OK
    advice = "" if status == OK else "; synchronise the clock (chrony/ntp): token and lease times depend on it"
    return Check("clock", status, f"offset from the server {skew:+.1f}s (±0.5s){advice}")


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per check instead of a table.")
@click.pass_context
def doctor_cmd(ctx: click.Context, as_json: bool) -> None:
    """Check this machine for running the agent: tools, engine, GPUs, server, clock."""
    try:
        settings, error = state_of(ctx).settings, None
    except ConfigError as exc:
        settings, error = None, str(exc)
    checks = run_checks(settings, error)
    for check in checks:
        click.echo(json.dumps(asdict(check)) if as_json else f"{check.status:5s} {check.name:12s} {check.detail}")
    failed = [check.name for check in checks if check.status == FAIL]
    if not as_json:
        click.echo(f"\n{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "\nready")
    ctx.exit(1 if failed else 0)
