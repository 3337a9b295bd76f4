"""Byte-compiling a published cache entry in the background (compile_bytecode="background").

    ensure_bytecode(paths, key, lock_timeout, log)   # start a detached compiler unless done or running
    start_compiler(root, key, lock_timeout)          # `python -m sandbox.bytecode` (bytecode.py), detached
    compile_entry(paths, key, lock_timeout)          # what that compiler runs, in its own process

The compiler holds locks/<key>.bytecode.lock (one per entry), compiles what has no .pyc into
entries/<key>/bytecode-staging with the entry's interpreter while holding the entry's lock
shared (prune leaves it alone), then, holding it exclusively for a moment, moves the staged
bytecode into the sealed entry (staged_bytecode.py), stamps it (bytecode-manifest.json) and
writes BYTECODE-COMPLETE. A compiler killed midway leaves only its staging tree; the next one
clears it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sandbox import manifest, staged_bytecode
from sandbox.cache_layout import (
    BYTECODE_MANIFEST,
    BYTECODE_MARKER,
    STAGING,
    VENV,
    CachePaths,
    disk_usage,
    read_meta,
    write_marker,
)
from sandbox.manifest import remove_tree
from sandbox.proc import module_env
from sandbox.pyenv import venv_python
from shipyard.locks import file_lock, try_lock

Log = Callable[[str], None]

COMPILE_TIMEOUT = 3600.0
"""Seconds one staged compile may take."""

_DETACH = '"$@" </dev/null >/dev/null 2>&1 &'
"""sh runs the compiler in the background and exits at once; the compiler is reparented."""


def start_compiler(root: Path, key: str, lock_timeout: float) -> None:
    """Start a detached compiler for entry `key` of the cache at `root`; do not wait for it."""
    command = [sys.executable, "-m", "sandbox.bytecode", str(root), key, str(lock_timeout)]
    subprocess.run(
        ["/bin/sh", "-c", _DETACH, "sh", *command],
        env=module_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, check=False, timeout=60,
    )


def ensure_bytecode(paths: CachePaths, key: str, lock_timeout: float, log: Log) -> None:
    """Start a background compiler for the entry unless its bytecode is done or being done."""
    if (paths.entry(key) / BYTECODE_MARKER).is_file():
        return
    compiling = try_lock(paths.bytecode_lock(key))
    if compiling is None:
        log(f"bytecode of environment {key[:12]} is being compiled in the background")
        return
    os.close(compiling)  # the compiler takes it (one racing us finds it busy and exits)
    if not paths.entry(key).is_dir():
        return
    log(f"compiling bytecode of environment {key[:12]} in the background")
    try:
        start_compiler(paths.root, key, lock_timeout)
    except (OSError, subprocess.SubprocessError) as exc:  # only costs the targets' first imports
        log(f"could not start the bytecode compiler of environment {key[:12]}: {exc}")


def compile_entry(paths: CachePaths, key: str, lock_timeout: float) -> bool:
    """Byte-compile a published entry in this process; True when its bytecode is complete
    afterwards, False when another process compiles it, the entry is gone, or the compile was
    killed."""
    compiling = try_lock(paths.bytecode_lock(key))
    if compiling is None:
        return False
    try:
        entry = paths.entry(key)
        with file_lock(paths.lock(key), shared=True, timeout=lock_timeout):
            if read_meta(entry) is None:
                return False
            if (entry / BYTECODE_MARKER).is_file():
                return True
            remove_tree(entry / STAGING)  # left by a compiler that was killed
            if not compile_staged(entry):
                return False
        with file_lock(paths.lock(key), timeout=lock_timeout):
            return install_staged(entry)
    finally:
        os.close(compiling)


def compile_staged(entry: Path) -> bool:
    """Compile what the entry's venv lacks into its staging tree, with the entry's interpreter."""
    command = [str(venv_python(entry / VENV)), "-I", "-S", staged_bytecode.__file__, str(entry / VENV),
               str(entry / STAGING)]
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                              timeout=COMPILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def install_staged(entry: Path) -> bool:
    """With the key's lock held exclusively: the staged bytecode into the entry, stamped."""
    if read_meta(entry) is None or (entry / BYTECODE_MARKER).is_file():
        remove_tree(entry / STAGING)
        return read_meta(entry) is not None
    try:
        staged_bytecode.install_staged(str(entry / STAGING), str(entry / VENV))
    finally:
        remove_tree(entry / STAGING)
    manifest.save(entry / BYTECODE_MANIFEST, manifest.seal(entry / VENV, only_bytecode=True))
    write_marker(entry / BYTECODE_MARKER, {"size": disk_usage(entry)})
    return True
