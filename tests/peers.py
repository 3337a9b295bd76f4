"""The real ClearML peers the compatibility tests run against Shipyard, each in its own venv.

Shipyard never imports `clearml`; the SDK and the agent are *peers* that talk to it over HTTP.
Their pins must not touch the project's environment, so each lives in a venv of its own under
`$SHIPYARD_PEERS_DIR` (default `~/.cache/shipyard-test-peers`), created once and reused:

    <peers dir>/sdk-clearml-2.1.12-py3.11/          python with clearml==2.1.12
    <peers dir>/optuna-clearml-2.1.12-py3.11/       the same plus optuna (optional: the HPO test's
                                                    OptimizerOptuna case skips when it cannot be made)
    <peers dir>/agent-clearml-agent-3.0.3-py3.11/   bin/clearml-agent 3.0.3
    <peers dir>/wheels-clearml-2.1.12-py3.11/       wheels the agent installs into task venvs
    <peers dir>/*.lock                              fcntl locks (parallel pytest workers)
    <peers dir>/<venv>/.shipyard-peer-complete      marker written last (records the pins);
                                                    missing or different pins => rebuilt
    <peers dir>/agent-cache/                        pip/venv caches the agent test reuses

CI pre-creates them (and can cache the directory) with:

    python -m tests.peers            # all; `python -m tests.peers sdk` for one; `--print` paths

After that the compat tests need no network: the agent test installs the task's packages from
the wheelhouse (PIP_NO_INDEX) and keeps the agent's venv cache under <peers dir>/agent-cache.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import ACCESS_KEY, SECRET_KEY

MARKER = ".shipyard-peer-complete"


@dataclass(frozen=True)
class Peer:
    key: str
    requirements: tuple[str, ...]
    executable: str  # what tests run, relative to the venv's bin dir ("" for a wheelhouse)
    wheelhouse: bool = False  # not a venv: wheels of `requirements` (and their dependencies)

    @property
    def dirname(self) -> str:
        main = self.requirements[0].replace("==", "-")
        return f"{self.key}-{main}-py{sys.version_info.major}.{sys.version_info.minor}"


PEERS = {
    "sdk": Peer("sdk", ("clearml==2.1.12",), "python"),
    # Optional: the SDK with optuna, for HyperParameterOptimizer(optimizer_class=OptimizerOptuna).
    # optuna 4.x: what clearml 2.1.12's OptimizerOptuna was written against.
    "optuna": Peer("optuna", ("clearml==2.1.12", "optuna==4.5.0"), "python"),
    # clearml-agent 3.0.3 imports pkg_resources, which newer setuptools drop.
    "agent": Peer("agent", ("clearml-agent==3.0.3", "setuptools<81"), "clearml-agent"),
    # What clearml-agent pip-installs into a task's venv (the SDK, and the pip version its default
    # agent.package_manager.pip_version asks for on Python 3.10/3.11): with these wheels the
    # agent test runs with PIP_NO_INDEX, without PyPI.
    "wheels": Peer("wheels", ("clearml==2.1.12", "pip<22.3"), "", wheelhouse=True),
}


def peers_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_PEERS_DIR") or Path.home() / ".cache" / "shipyard-test-peers")


def venv_path(key: str) -> Path:
    return peers_dir() / PEERS[key].dirname


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _have_uv() -> bool:
    try:
        return subprocess.run([sys.executable, "-m", "uv", "--version"], check=False, capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run(cmd: list[str], log) -> None:
    log(f"$ {' '.join(cmd)}")
    proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}")


def _build(peer: Peer, venv: Path, log) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    if peer.wheelhouse:
        venv.mkdir(parents=True)
        _run([str(ensure("agent", log).with_name("python")), "-m", "pip", "download", "--disable-pip-version-check",
              "--dest", str(venv), *peer.requirements], log)
    elif _have_uv():
        # --seed puts pip into the venv: clearml-agent and the SDK shell out to `python -m pip`.
        _run([sys.executable, "-m", "uv", "venv", "--seed", "--python", sys.executable, str(venv)], log)
        _run([sys.executable, "-m", "uv", "pip", "install", "--python", str(_bin(venv, "python")),
              *peer.requirements], log)
    else:
        _run([sys.executable, "-m", "venv", str(venv)], log)
        _run([str(_bin(venv, "python")), "-m", "pip", "install", "--disable-pip-version-check",
              *peer.requirements], log)
    if not _ready(peer, venv):
        raise RuntimeError(f"{peer.key}: nothing usable in {venv}")
    (venv / MARKER).write_text(json.dumps({"requirements": list(peer.requirements),
                                           "python": sys.version, "created": time.time()}))


def _complete(peer: Peer, venv: Path) -> bool:
    try:
        marker = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("requirements") == list(peer.requirements) and _ready(peer, venv)


def _ready(peer: Peer, venv: Path) -> bool:
    if peer.wheelhouse:
        return any(venv.glob("*.whl"))
    return _bin(venv, peer.executable).exists()


def _target(peer: Peer, venv: Path) -> Path:
    return venv if peer.wheelhouse else _bin(venv, peer.executable)


def ensure(key: str, log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> Path:
    """Create the peer unless it is already complete; returns its executable (the directory
    of a wheelhouse)."""
    peer = PEERS[key]
    venv = venv_path(key)
    exe = _target(peer, venv)
    if _complete(peer, venv):
        return exe
    with _locked(peers_dir() / f"{peer.dirname}.lock"):
        if not _complete(peer, venv):  # another process may have built it meanwhile
            log(f"creating {key} peer at {venv} ({', '.join(peer.requirements)})")
            _build(peer, venv, log)
    return exe


def clearml_agent_conf(server, worker: str, *, python_binary: str | None, venvs_dir: Path, cache_dir: Path,
                       vcs_dir: Path, cache_entries: int, free_space_gb: float, agent_extra: str = "") -> str:
    """A clearml.conf for the real clearml-agent against `server` (a tests.helpers.ServerProcess):
    the agent's own defaults but for the worker id, interpreter, pip venvs, cache places and
    sizes named here, and `agent_extra` lines added to its `agent` section."""
    python = f'python_binary: "{python_binary}"' if python_binary else ""
    return textwrap.dedent(f"""\
        api {{
            api_server: {server.api_url}
            web_server: {server.web_url}
            files_server: {server.files_url}
            credentials {{ access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
        }}
        agent {{
            worker_id: "{worker}"
            {python}
            package_manager {{ type: pip, system_site_packages: false }}
            venvs_dir: {venvs_dir}
            venvs_cache {{ max_entries: {cache_entries}, free_space_threshold_gb: {free_space_gb}, path: {cache_dir / "venvs-cache"} }}
            vcs_cache {{ enabled: true, path: {vcs_dir} }}
            pip_download_cache {{ enabled: true, path: {cache_dir / "pip-download-cache"} }}
        @EXTRA@}}
        sdk {{ development {{ report_use_subprocess: false }} }}
    """).replace("@EXTRA@", textwrap.indent(textwrap.dedent(agent_extra), "    "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("peers", nargs="*", metavar="PEER", help=f"which of {', '.join(PEERS)} (default: all)")
    parser.add_argument("--print", action="store_true", help="only print the executables' paths")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(unknown)} (choose from {', '.join(PEERS)})")
    for key in args.peers or list(PEERS):
        if args.print:
            print(f"{key}: {_target(PEERS[key], venv_path(key))}")
            continue
        started = time.monotonic()
        exe = ensure(key)
        print(f"{key}: {exe} ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
