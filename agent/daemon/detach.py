"""`shipyard daemon --detached` and `shipyard daemon --stop [--force]`.

A detached daemon is the same command line started again in a new session, its output in a
log file, its pid in a pid file named after its worker id (one daemon per worker id: two
daemons sharing one id would hand each other's tasks back on restart):

    <work_dir>/daemons/<worker id>.pid     written by the daemon itself, removed when it exits
    <work_dir>/daemons/<worker id>.log     its console and log lines (appended)

`--stop` sends SIGTERM: the daemon drains (its running task finishes, nothing new is taken).
`--stop --force` sends a second SIGTERM as well: the running task is aborted and ends
`stopped`. A `--stop` after a `--stop` that is still draining only needs `--force` to abort.
Under systemd none of this is used: systemd keeps the pid and sends the signals.

The command's options are shipyard/cli/agent.py's; here are the plain steps it calls:
`start_detached` (returns the exit code and what to tell the person), `stop_daemon`
(reports its progress through `echo`), and `PidFile`, which the detached daemon holds.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from shipyard.client.config import Settings
from shipyard.errors import ConfigError
from shipyard.signals import process_alive

READY_MARK = "listening on"   # the daemon's console line once it has registered and claims work
START_TIMEOUT_S = 60.0        # how long --detached waits for that line
STOP_WAIT_S = 10.0            # how long --stop waits to report the daemon gone (drain may take longer)
FORCE_WAIT_S = 60.0           # how long --stop --force waits (abort grace and log flush included)
SIGNAL_GAP_S = 0.5            # two signals sent back to back could arrive as one


@dataclass(frozen=True)
class DaemonFiles:
    pid: Path
    log: Path

    @classmethod
    def of(cls, settings: Settings) -> DaemonFiles:
        name = re.sub(r"[^A-Za-z0-9_.@-]", "_", settings.agent.worker_id)
        folder = settings.agent.work_dir / "daemons"
        return cls(folder / f"{name}.pid", folder / f"{name}.log")


# --- the running daemon's side -------------------------------------------------------------------


class PidFile:
    """Holds the daemon's pid in a file while it runs; refuses to start over a live one."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> PidFile:
        other = read_pid(self.path)
        if other is not None and other != os.getpid() and is_daemon(other):
            raise ConfigError(f"a daemon with this worker id already runs (pid {other}, {self.path}); "
                              "stop it first with `shipyard daemon --stop`")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + f".{os.getpid()}")
        temporary.write_text(f"{os.getpid()}\n")
        os.replace(temporary, self.path)
        return self

    def __exit__(self, *_exc: object) -> None:
        if read_pid(self.path) == os.getpid():
            self.path.unlink(missing_ok=True)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def is_daemon(pid: int) -> bool:
    """The process lives and is a `shipyard ... daemon` (not an unrelated process that reused the pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return process_alive(pid)  # no /proc (macOS): trust the pid
    return b"daemon" in argv and any(b"shipyard" in part for part in argv)


# --- --detached ----------------------------------------------------------------------------------


def start_detached(files: DaemonFiles, argv: list[str]) -> tuple[int, str]:
    """Start `shipyard <argv without --detached>` in a new session; wait until it listens.

    Returns the exit code and the report: where the daemon's files are (code 0, for stdout), or
    why it is not running and its log so far (for stderr).
    """
    running = read_pid(files.pid)
    if running is not None and is_daemon(running):
        raise ConfigError(f"a daemon with this worker id already runs (pid {running}); "
                          "stop it with `shipyard daemon --stop`")
    files.log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "shipyard", *[a for a in argv if a != "--detached"],
               "--pid-file", str(files.pid)]
    with files.log.open("ab") as log:
        offset = log.tell()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
    outcome = _wait_ready(child, files.log, offset)
    if outcome is None:
        return 0, (f"daemon detached: pid {child.pid}\n  log:      {files.log}\n  pid file: {files.pid}\n"
                   "  stop:     shipyard daemon --stop   (drain; add --force to abort the running task)")
    code = child.returncode if child.returncode not in (None, 0) else 1
    return code, f"{outcome}\n{_tail(files.log, offset)}"


def _wait_ready(child: subprocess.Popen, log: Path, offset: int) -> str | None:
    """None once the daemon's ready line shows in its log; else why it is not running."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if READY_MARK in _tail(log, offset):
            return None
        if child.poll() is not None:
            return f"the daemon exited with code {child.returncode} before it listened; its log:"
        time.sleep(0.1)
    return f"the daemon (pid {child.pid}) did not report ready within {START_TIMEOUT_S:g}s; it keeps " \
           "running; its log so far:"


def _tail(log: Path, offset: int, limit: int = 16384) -> str:
    with log.open("rb") as handle:
        handle.seek(max(offset, log.stat().st_size - limit))
        return handle.read().decode(errors="replace")


# --- --stop ---------------------------------------------------------------------------------------


def stop_daemon(files: DaemonFiles, *, force: bool, echo: Callable[[str], None]) -> None:
    """SIGTERM (twice with `force`) to this worker id's detached daemon, then wait a while for it to
    go; `echo` gets each step as it happens (the wait can take a minute)."""
    pid = read_pid(files.pid)
    if pid is None or not is_daemon(pid):
        if pid is not None:
            files.pid.unlink(missing_ok=True)  # stale: the daemon died without removing it
        echo(f"no detached daemon runs for this worker id ({files.pid} {'was stale' if pid else 'absent'})")
        return
    os.kill(pid, signal.SIGTERM)
    if force:
        time.sleep(SIGNAL_GAP_S)
        if process_alive(pid):
            os.kill(pid, signal.SIGTERM)
    echo(f"sent {'SIGTERM twice (abort)' if force else 'SIGTERM (drain)'} to daemon pid {pid}")
    if _wait_gone(pid, FORCE_WAIT_S if force else STOP_WAIT_S):
        echo(f"daemon pid {pid} stopped")
    else:
        echo(f"daemon pid {pid} is still {'stopping' if force else 'draining'} (its log: {files.log})"
             + ("" if force else "; `shipyard daemon --stop --force` aborts the running task"))


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid) or _zombie(pid):
            return True
        time.sleep(0.1)
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
