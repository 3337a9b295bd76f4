"""Running a helper command (git, uv, pip) with a timeout that also kills its children.

`subprocess.run(timeout=...)` kills only the direct child; git's `git-remote-https` or a
package build started by uv would keep the output pipes open and the wait would hang. The
command runs in its own session, and on timeout the whole process group is killed
(`kill_group`, also for callers that start their own sessions). `module_env()` is the
environment for `python -m <one of our modules>` children (the byte-compiler, the prebuild).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_IMPORT_ROOT = str(Path(__file__).resolve().parents[1])
"""The directory holding the project's packages."""


def module_env() -> dict[str, str]:
    """This process's environment with the project's packages first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_IMPORT_ROOT, env.get("PYTHONPATH")) if p)
    return env


def run_captured(
    command: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    beside: Callable[[], object] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion and capture text output; raise subprocess.TimeoutExpired after killing it.

    `beside` runs in this process once the command has started, before its output is read (the
    command's own time overlaps it); if it raises, the command is killed and the error goes on.
    """
    with subprocess.Popen(
        list(command), cwd=cwd, env=dict(env) if env is not None else None, text=True,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    ) as proc:
        try:
            if beside is not None:
                beside()
            stdout, stderr = proc.communicate(stdin, timeout=timeout)
        except BaseException:
            kill_group(proc)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the session `proc` leads (started with start_new_session=True): its children too,
    even after `proc` itself has exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
