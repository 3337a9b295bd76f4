"""Python environments: pick an interpreter, build a venv, install requirements, freeze it.

    python = select_interpreter(script.get("binary"), requirements.python_hint, log)
    frozen = EnvBuilder(uv_cache_dir=...).build(python, requirements, Path("/venvs/t1"), log)

Installs use uv (the `uv` package's binary, or one on PATH). When uv is missing or fails for a
reason that is not the requirements' fault, the venv is rebuilt with virtualenv + pip.
Unresolvable requirements raise RequirementsError; an unreachable index InfrastructureError.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox import install_errors, seed
from sandbox.manifest import remove_tree
from sandbox.proc import run_captured
from sandbox.requirements import RequirementSet
from sandbox.torch_resolve import with_credentials
from shipyard.errors import InfrastructureError, RequirementsError

Log = Callable[[str], None]

INSTALL_TIMEOUT = 3600.0
"""Seconds one venv creation, install or freeze may take."""

_PROBE = (
    "import json, sys, sysconfig; print(json.dumps({"
    "'executable': sys.executable, 'base': getattr(sys, '_base_executable', sys.executable), "
    "'version': '%d.%d.%d' % sys.version_info[:3], 'platform': sysconfig.get_platform(), "
    "'implementation': sys.implementation.cache_tag}))"
)


@dataclass(frozen=True)
class Interpreter:
    path: Path
    """The base interpreter's executable (never a venv's, never a pyenv shim)."""
    version: str
    platform: str
    implementation: str

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def identity(self) -> str:
        """Everything a venv built from this interpreter depends on (part of the cache key)."""
        return f"{self.implementation} {self.version} {self.platform} {self.path}"


def probe(executable: str | Path) -> Interpreter | None:
    """Ask an executable what it is; None when it does not run (e.g. a broken pyenv shim).

    Answers are remembered per (path, size, mtime): starting an interpreter to ask costs tens
    of milliseconds, on every task pickup otherwise. The interpreter running this answers for
    itself, without a process: a glue job's `shipyard execute` is a fresh process per task, which
    remembers nothing (issue 22)."""
    try:
        st = os.stat(executable)
    except OSError:
        return None
    if os.path.realpath(executable) == os.path.realpath(sys.executable):
        return _probe_self()
    return _probe_cached(str(executable), st.st_size, st.st_mtime_ns)


def _probe_self() -> Interpreter:
    """What `_PROBE` would print when run by this interpreter (the same fields, read here)."""
    import sysconfig

    base = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable) or sys.executable))
    return Interpreter(base, "%d.%d.%d" % sys.version_info[:3], sysconfig.get_platform(),
                       str(sys.implementation.cache_tag))


@functools.lru_cache(maxsize=64)
def _probe_cached(executable: str, _size: int, _mtime_ns: int) -> Interpreter | None:
    try:
        proc = subprocess.run(
            [str(executable), "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30
        )
        info = json.loads(proc.stdout) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    if not info:
        return None
    base = Path(os.path.realpath(info["base"] or info["executable"]))
    return Interpreter(base, info["version"], info["platform"], info["implementation"])


def select_interpreter(binary: str | None = None, version_hint: str | None = None, log: Log = print, *,
                       strict: bool = False) -> Interpreter:
    """The interpreter a task asked for (`script.binary`, else its recorded version), if installed.

    Looks on PATH, then asks uv for installed interpreters (`uv python find`, no downloads).
    Falls back to the interpreter running the agent, saying so in the log; with `strict`
    (agent.python_version_strict) a recorded major.minor that is not installed fails instead.
    """
    wanted = _candidates(binary, version_hint)
    for name, version in wanted:
        found = _find(name, version) or (_uv_find(version) if version else None)
        if found:
            log(f"using {found.path} (Python {found.version}) for '{name}'")
            return found
    current = probe(sys.executable)
    if current is None:
        raise InfrastructureError(f"the agent's own interpreter {sys.executable} does not run")
    if wanted:
        asked = " or ".join(name for name, _ in wanted)
        versions = [v for _, v in wanted if v]
        if strict and versions and not any((current.version + ".").startswith(v + ".") for v in versions):
            raise RequirementsError(
                f"the task was recorded with Python {versions[0]}, which is not installed on this worker "
                "(agent.python_version_strict is set)", kind="python_missing")
        log(f"{asked} requested but not installed here; using {current.path} (Python {current.version})")
    return current


def _candidates(binary: str | None, version_hint: str | None) -> list[tuple[str, str | None]]:
    """(executable name or path, required major.minor) pairs to try, in order."""
    found: list[tuple[str, str | None]] = []
    if binary and re.search(r"python[\d.]*$", binary):
        match = re.search(r"python(\d+(?:\.\d+)?)$", binary)
        found.append((binary, match.group(1) if match else None))
    if version_hint:
        short = ".".join(version_hint.split(".")[:2])
        found.append((f"python{short}", short))
    return list(dict.fromkeys(found))


def _find(name: str, version: str | None) -> Interpreter | None:
    path = name if os.sep in name else shutil.which(name)
    found = probe(path) if path else None
    if found and version and not (found.version + ".").startswith(version + "."):
        return None
    return found


UV_FIND_TTL = 300.0
"""Seconds an answer of `uv python find` is reused (it inspects every interpreter it can see,
seconds on a machine with many; a task pickup should not pay that each time)."""

_uv_found: dict[str, tuple[float, Interpreter | None]] = {}


def _uv_find(version: str) -> Interpreter | None:
    """An installed interpreter of `version` that uv knows of (its managed ones, pyenv's...)."""
    now = time.monotonic()
    cached = _uv_found.get(version)
    if cached is not None and now - cached[0] < UV_FIND_TTL:
        return cached[1]
    found = _uv_find_now(version)
    _uv_found[version] = (now, found)
    return found


def _uv_find_now(version: str) -> Interpreter | None:
    uv = find_uv()
    if uv is None:
        return None
    try:
        proc = subprocess.run([str(uv), "python", "find", "--no-python-downloads", version],
                              capture_output=True, text=True, timeout=30, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None
    return _find(path, version) if path else None


def find_uv() -> Path | None:
    """The uv binary next to the agent's interpreter, else the `uv` package's, else one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    try:
        import uv

        path = Path(uv.find_uv_bin())
        if path.is_file():
            return path
    except (ImportError, FileNotFoundError):
        pass
    on_path = shutil.which("uv")
    return Path(on_path) if on_path else None


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@dataclass
class EnvBuilder:
    """Builds one venv at a time. `env` adds installer environment (UV_INDEX_URL, proxies...)."""

    uv_cache_dir: Path | None = None
    env: Mapping[str, str] | None = None
    seed_pip: bool = True
    """Put pip into the venv, for task code that runs `python -m pip` itself."""
    timeout: float = INSTALL_TIMEOUT
    uv: Path | None = None
    """The uv binary; found automatically when None."""
    use_uv: bool = True
    index_credentials: Mapping[str, tuple[str, str]] | None = None
    """host (or host:port) -> (user, password) for package indexes; written into the index URLs
    of the temporary install file only, never into logs or the cache key."""
    trusted_hosts: tuple[str, ...] = ()
    """Hosts whose index may be plain http or have a certificate that does not verify."""

    def build(self, python: Interpreter, requirements: RequirementSet, target: Path, log: Log = print,
              beside: Callable[[], object] | None = None) -> list[str]:
        """Create a venv at `target` with `requirements` installed; return its freeze list.

        `beside` is called once the venv's files are all in place (the install and pip's seed
        done) and before the freeze list is returned; it may seal the venv. With uv it runs
        while `uv pip freeze` does (uv only reads the venv); with pip, after `pip freeze` (a
        Python process, which could write bytecode into the venv). A failed uv build falls
        back to pip and calls it again on the new venv.
        """
        uv = (self.uv or find_uv()) if self.use_uv else None
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # uv and virtualenv want to create the directory themselves
        if uv is not None and uv.is_file():
            try:
                return self._build_with_uv(uv, python, requirements, target, log, beside)
            except _UvUnusable as exc:
                log(f"uv could not build the environment ({exc}); falling back to virtualenv + pip")
                remove_tree(target)   # `beside` may have sealed it
        else:
            log("uv not available; building the environment with virtualenv + pip")
        frozen = self._build_with_pip(python, requirements, target, log)
        if beside is not None:
            beside()
        return frozen

    def run_uv(self, args: Sequence[str], drop: Sequence[str] = ()) -> subprocess.CompletedProcess[str] | None:
        """Run `uv ARGS` with the installer environment (index options, cache) less the variables
        in `drop`; None without uv. Used for uv.lock even when installs use pip (use_uv=False)."""
        uv = self.uv or find_uv()
        if uv is None or not uv.is_file():
            return None
        return self._run([str(uv), *args], drop)

    def forget_downloads(self, log: Log = print) -> None:
        """Empty uv's cache (after a tampered cache entry: uv hard-links its cached files into
        the venvs it builds, so a file changed through a venv is changed in uv's cache too, and
        the rebuild must download it again rather than link the changed file back)."""
        uv = (self.uv or find_uv()) if self.use_uv else None
        if uv is None or not uv.is_file():
            return
        proc = self._run([str(uv), "cache", "clean"])
        if proc.returncode != 0:
            log(f"WARNING: could not empty uv's cache: {install_errors.reason(proc.stderr)}")

    def _build_with_uv(
        self, uv: Path, python: Interpreter, requirements: RequirementSet, target: Path, log: Log,
        beside: Callable[[], object] | None = None,
    ) -> list[str]:
        proc = self._run([str(uv), "venv", "--quiet", "--python", str(python.path), str(target)])
        if proc.returncode != 0:
            raise _UvUnusable(install_errors.reason(proc.stderr))
        seeding = seed.start_seed(uv, python.path, target, self._environment()) if self.seed_pip else None
        try:
            if requirements:
                log(f"installing {len(requirements.requirements)} requirement lines with uv")
                self._install(
                    [str(uv), "pip", "install", "--python", str(venv_python(target))], requirements, uv_install=True,
                    log=log,
                )
        except BaseException:
            if seeding is not None:
                seed.abandon(seeding)
            raise
        why = seed.finish_seed(seeding, target, self.timeout) if seeding is not None else None
        if why is not None:
            raise _UvUnusable(f"could not seed pip: {install_errors.reason(why)}")
        proc = self._run([str(uv), "pip", "freeze", "--python", str(venv_python(target))], beside=beside)
        if proc.returncode != 0:
            raise _UvUnusable(install_errors.reason(proc.stderr))
        return _lines(proc.stdout)

    def _build_with_pip(self, python: Interpreter, requirements: RequirementSet, target: Path, log: Log) -> list[str]:
        proc = self._run([sys.executable, "-m", "virtualenv", "--quiet", "-p", str(python.path), str(target)])
        if proc.returncode != 0:
            raise InfrastructureError(f"could not create a virtualenv at {target}: {_why(proc)}")
        if requirements:
            log(f"installing {len(requirements.requirements)} requirement lines with pip")
            pip = [str(venv_python(target)), "-m", "pip", "install", "--disable-pip-version-check"]
            self._install(pip, requirements, uv_install=False, log=log)
        proc = self._run([str(venv_python(target)), "-m", "pip", "freeze", "--all"])
        if proc.returncode != 0:
            raise InfrastructureError(f"pip freeze failed in {target}: {_why(proc)}")
        return _lines(proc.stdout)

    def _install(self, command: list[str], requirements: RequirementSet, *, uv_install: bool,
                 log: Log | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="shipyard-req-") as tmp:
            req_file = Path(tmp) / "requirements.txt"
            lines = with_credentials(requirements.install_lines(), self.index_credentials or {})
            req_file.write_text("\n".join(lines) + "\n")
            proc = self._run([*command, "-r", str(req_file)])
        if proc.returncode == 0:
            return
        output = proc.stdout + "\n" + proc.stderr
        failure = install_errors.classify(output)
        if log is not None and failure != "other":  # the installer's own words, before our one-line reason
            for line in install_errors.tail(output):
                log(f"  {Path(command[0]).name}: {line}")
        if failure == "auth":
            raise install_errors.auth_error(output)
        if failure == "network":
            raise install_errors.network_error(output)
        if failure == "other" and uv_install:
            raise _UvUnusable(install_errors.reason(output))
        raise install_errors.requirements_error(output, requirements)

    def _run(self, command: Sequence[str], drop: Sequence[str] = (),
             beside: Callable[[], object] | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in self._environment().items() if k not in drop}
        try:
            return run_captured(command, env=env, timeout=self.timeout, beside=beside)
        except subprocess.TimeoutExpired as exc:
            raise InfrastructureError(
                f"'{Path(command[0]).name} {command[1]}' timed out after {self.timeout:.0f}s", kind="install_timeout"
            ) from exc
        except FileNotFoundError as exc:
            raise InfrastructureError(f"{command[0]} not found", kind="installer_missing") from exc

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
        env.update(self.env or {})
        env.setdefault("UV_NO_PROGRESS", "1")
        if self.trusted_hosts:
            env["UV_INSECURE_HOST"] = " ".join(self.trusted_hosts)
            env["PIP_TRUSTED_HOST"] = " ".join(self.trusted_hosts)
        if self.uv_cache_dir is not None:
            env["UV_CACHE_DIR"] = str(self.uv_cache_dir)
        return env


def compile_bytecode(python: Path, root: Path, timeout: float = INSTALL_TIMEOUT) -> bool:
    """Byte-compile everything under `root` so each task skips that work on first import.

    True when compileall ran to the end (a py2-only file it cannot compile is not a failure);
    False when it was killed or timed out. py_compile writes each .pyc under a temporary name
    and renames it, so readers of `root` see a complete .pyc or none.
    """
    try:
        proc = subprocess.run(
            [str(python), "-m", "compileall", "-q", "-j", "0", str(root)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode >= 0


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    """The failure's reason from stderr, or from stdout where the tool reports there
    (virtualenv prints its errors on stdout)."""
    return install_errors.reason(proc.stderr if proc.stderr.strip() else proc.stdout)


class _UvUnusable(Exception):
    """uv failed for a reason that is not the requirements' fault; pip may still succeed."""


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
