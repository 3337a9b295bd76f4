"""The background byte-compiler of environment-cache entries.

    bytecode.start_compiler(cache_root, key, lock_timeout)   # returns at once
    python -m sandbox.bytecode <cache root> <key> [<lock timeout>]

EnvCache publishes an entry right after the install and starts this compiler on it. It runs
detached (its own session, so the agent's process-group kills and terminal signals miss it;
reparented away from the agent, so it never becomes the agent's zombie), at low CPU priority,
and calls EnvCache.compile_entry: one compiler per entry (an exclusive lock), the entry held
against prune meanwhile (its lock shared), and BYTECODE-COMPLETE written when compileall is
done. A compiler that dies midway only costs the rest of the work: the next materialize of the
entry starts another one.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NICE = 10
"""Added niceness: task processes (nice 0) get about ten times the CPU share of the compiler."""

_IMPORT_ROOT = str(Path(__file__).resolve().parents[1])
"""The directory holding the `sandbox` package, for the compiler's PYTHONPATH."""

_DETACH = '"$@" </dev/null >/dev/null 2>&1 &'
"""sh runs the compiler in the background and exits at once; the compiler is reparented."""


def start_compiler(root: Path, key: str, lock_timeout: float) -> None:
    """Start a detached compiler for entry `key` of the cache at `root`; do not wait for it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_IMPORT_ROOT, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "sandbox.bytecode", str(root), key, str(lock_timeout)]
    subprocess.run(
        ["/bin/sh", "-c", _DETACH, "sh", *command],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, check=False, timeout=60,
    )


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m sandbox.bytecode <cache root> <key> [<lock timeout>]", file=sys.stderr)
        return 2
    try:
        os.nice(NICE)
    except OSError:
        pass
    from sandbox.env_cache import LOCK_TIMEOUT, EnvCache

    lock_timeout = float(argv[2]) if len(argv) == 3 else LOCK_TIMEOUT
    cache = EnvCache(Path(argv[0]), lock_timeout=lock_timeout, compile_bytecode="off")
    return 0 if cache.compile_entry(argv[1]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
