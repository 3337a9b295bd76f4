"""The background byte-compiler of environment-cache entries.

    python -m sandbox.bytecode <cache root> <key> [<lock timeout>]

EnvCache publishes an entry right after the install and starts this compiler on it
(cache_bytecode.start_compiler, which returns at once). It runs
detached (its own session, so the agent's process-group kills and terminal signals miss it;
reparented away from the agent, so it never becomes the agent's zombie), at low CPU priority,
and calls EnvCache.compile_entry: one compiler per entry (an exclusive lock), the entry held
against prune meanwhile (its lock shared), compiling into a staging tree (the entry is sealed:
staged_bytecode.py), then moving the result in and writing BYTECODE-COMPLETE with the entry's
lock held exclusively for that moment. A compiler that dies midway only costs the rest of the
work: the next materialize of the entry starts another one, which clears the staging tree.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from sandbox.env_cache import LOCK_TIMEOUT, EnvCache

NICE = 10
"""Added niceness: task processes (nice 0) get about ten times the CPU share of the compiler."""


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m sandbox.bytecode <cache root> <key> [<lock timeout>]", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        os.nice(NICE)
    lock_timeout = float(argv[2]) if len(argv) == 3 else LOCK_TIMEOUT
    cache = EnvCache(Path(argv[0]), lock_timeout=lock_timeout, compile_bytecode="off")
    return 0 if cache.compile_entry(argv[1]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
