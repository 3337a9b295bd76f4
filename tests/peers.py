"""The real ClearML peers the compatibility tests run against Shipyard, each in its own venv.

Shipyard never imports `clearml`; the SDK and the agent are *peers* that talk to it over HTTP.
Their pins must not touch the project's environment, so each lives in a venv of its own under
`$SHIPYARD_PEERS_DIR` (default `~/.cache/shipyard-test-peers`), created once and reused:

    <peers dir>/sdk-clearml-2.1.12-py3.11/          python with clearml==2.1.12
    <peers dir>/agent-clearml-agent-3.0.3-py3.11/   bin/clearml-agent 3.0.3
    <peers dir>/*.lock                              fcntl locks (parallel pytest workers)
    <peers dir>/<venv>/.shipyard-peer-complete      marker written last (records the pins);
                                                    missing or different pins => rebuilt
    <peers dir>/agent-cache/                        pip/venv caches the agent test reuses

CI pre-creates them (and can cache the directory) with:

    python -m tests.peers            # both; `python -m tests.peers sdk` for one; `--print` paths
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
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = ".shipyard-peer-complete"


@dataclass(frozen=True)
class Peer:
    key: str
    requirements: tuple[str, ...]
    executable: str  # what tests run, relative to the venv's bin dir

    @property
    def dirname(self) -> str:
        main = self.requirements[0].replace("==", "-")
        return f"{self.key}-{main}-py{sys.version_info.major}.{sys.version_info.minor}"


PEERS = {
    "sdk": Peer("sdk", ("clearml==2.1.12",), "python"),
    # clearml-agent 3.0.3 imports pkg_resources, which newer setuptools drop.
    "agent": Peer("agent", ("clearml-agent==3.0.3", "setuptools<81"), "clearml-agent"),
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
        return subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run(cmd: list[str], log) -> None:
    log(f"$ {' '.join(cmd)}")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}")


def _build(peer: Peer, venv: Path, log) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    if _have_uv():
        # --seed puts pip into the venv: clearml-agent and the SDK shell out to `python -m pip`.
        _run([sys.executable, "-m", "uv", "venv", "--seed", "--python", sys.executable, str(venv)], log)
        _run([sys.executable, "-m", "uv", "pip", "install", "--python", str(_bin(venv, "python")),
              *peer.requirements], log)
    else:
        _run([sys.executable, "-m", "venv", str(venv)], log)
        _run([str(_bin(venv, "python")), "-m", "pip", "install", "--disable-pip-version-check",
              *peer.requirements], log)
    exe = _bin(venv, peer.executable)
    if not exe.exists():
        raise RuntimeError(f"{peer.key} venv has no {exe}")
    (venv / MARKER).write_text(json.dumps({"requirements": list(peer.requirements),
                                           "python": sys.version, "created": time.time()}))


def _complete(peer: Peer, venv: Path) -> bool:
    try:
        marker = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("requirements") == list(peer.requirements) and _bin(venv, peer.executable).exists()


def ensure(key: str, log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> Path:
    """Create the peer's venv unless it is already complete; returns its executable."""
    peer = PEERS[key]
    venv = venv_path(key)
    exe = _bin(venv, peer.executable)
    if _complete(peer, venv):
        return exe
    with _locked(peers_dir() / f"{peer.dirname}.lock"):
        if not _complete(peer, venv):  # another process may have built it meanwhile
            log(f"creating {key} peer venv at {venv} ({', '.join(peer.requirements)})")
            _build(peer, venv, log)
    return exe


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
            print(f"{key}: {_bin(venv_path(key), PEERS[key].executable)}")
            continue
        started = time.monotonic()
        exe = ensure(key)
        print(f"{key}: {exe} ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
