"""The background builder of one environment-cache entry (prepare while queued).

    python -m sandbox.prebuild <nice>   # stdin: a pickled PrebuildJob

The daemon's preparer (agent/daemon/prepare.py) decided everything (the cache with its builder,
the requirements as they will be installed, the interpreter, the key's `extra`) exactly as a
task's pickup would, and starts this process to run `EnvCache.ensure` on it. A process of its
own, in its own session, so that a claim of another task preempts it with one signal to its
process group (uv included), and at low CPU priority, so a running task keeps the machine. The
job travels on stdin, never on the command line: the builder carries the index credentials.

The entry's bytecode is compiled in this process too (the cache's "background" mode), before
the result line, so an entry reported ready is as warm as one a task used before.

Output: the build's log lines on stdout (the daemon keeps the tail, redacted, for a failure),
then one JSON line `{"key", "built"}` or `{"error", "kind"}`; exit 0 when the entry is ready.
A build killed midway leaves only a temporary directory (`tmp/<key>.*`) and a released lock:
the next build of the key discards it, as after any crash.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import sys
from dataclasses import dataclass

from sandbox.env_cache import EnvCache
from sandbox.pyenv import Interpreter
from sandbox.requirements import RequirementSet
from shipyard.errors import ShipyardError

RESULT_PREFIX = "shipyard-prebuild-result: "
"""Starts the last line, the JSON result (the build's own lines never do)."""


@dataclass(frozen=True)
class PrebuildJob:
    cache: EnvCache
    requirements: RequirementSet
    python: Interpreter
    extra: str


def main(argv: list[str]) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.nice(int(argv[0]))
    job: PrebuildJob = pickle.load(sys.stdin.buffer)   # noqa: S301 - from the daemon that started us

    def log(line: str) -> None:
        print(line, flush=True)

    # Bytecode is compiled here rather than by a detached compiler: in this niced process, killed
    # with it, and done before the entry is reported ready, so the pickup finds it as warm as any.
    background = job.cache.compile_bytecode == "background"
    if background:
        job.cache.compile_bytecode = "off"
    try:
        key, built = job.cache.ensure(job.requirements, job.python, job.extra, log=log)
        if background:
            job.cache.compile_entry(key)   # False: another process compiles it; the pickup copes
    except (ShipyardError, ValueError, OSError) as exc:
        kind = getattr(exc, "kind", "error") if isinstance(exc, ShipyardError) else type(exc).__name__
        print(RESULT_PREFIX + json.dumps({"error": str(exc), "kind": kind}), flush=True)
        return 1
    print(RESULT_PREFIX + json.dumps({"key": key, "built": built}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
