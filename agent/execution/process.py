"""Child processes: each task runs in its own process group, dies with its agent
(PR_SET_PDEATHSIG on Linux), and is stopped with TERM to the group, a grace period, then KILL.
With a task user (agent/task_user.py) the child drops to it before exec: supplementary groups
cleared, then its gid and uid (subprocess does this after the fork, before `_child_setup`, so the
death signal set there survives the change of user).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from agent.execution.task_user import TaskUser

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True) if sys.platform == "linux" else None


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass
class ExitInfo:
    returncode: int
    signalled: int | None  # the signal that ended the process, if any
    killed: bool           # we had to escalate to SIGKILL


class Child:
    """A task process. Spawn it from a thread that lives as long as the child (PDEATHSIG fires
    when the spawning *thread* exits)."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], user: TaskUser | None = None):
        switch: dict[str, Any] = {} if user is None else {"user": user.uid, "group": user.gid, "extra_groups": []}
        self.proc = subprocess.Popen(list(argv), cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=_child_setup, close_fds=True, **switch)
        self.pgid = self.proc.pid  # setsid makes the child its own group leader
        self.killed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal_group(self, sig: int) -> bool:
        try:
            os.killpg(self.pgid, sig)
            return True
        except ProcessLookupError:
            return False

    def terminate(self, grace_s: float) -> None:
        """TERM to the whole group, wait up to `grace_s`, then KILL whatever is left."""
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while (left := deadline - time.monotonic()) > 0:
            # wait() looks at the leader from 0.5 ms apart up to 50 ms: reaped as soon as it dies
            if self.wait(min(left, 0.05)) is not None and not group_alive(self.pgid):
                return
            if self.proc.returncode is not None:
                time.sleep(min(left, 0.02))   # the leader is gone, others of its group are not yet
        if self.signal_group(signal.SIGKILL):
            self.killed = True
        self.proc.wait()

    def reap_group(self) -> None:
        """After the leader exits, make sure nothing it started lives on in its group."""
        if group_alive(self.pgid):
            self.signal_group(signal.SIGKILL)

    def exit_info(self) -> ExitInfo:
        code = self.proc.wait()
        return ExitInfo(returncode=code, signalled=-code if code < 0 else None, killed=self.killed)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A group whose only members are zombies still "exists"; look for a live member.
    for entry in Path("/proc").iterdir() if Path("/proc").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
