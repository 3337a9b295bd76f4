"""Byte-compile a sealed entry without ever making it writable for long.

    python -I -S sandbox/staged_bytecode.py <venv> <staging>     # run by the entry's own interpreter
    install_staged(staging, venv)                                 # then, the entry's lock held

An entry's directories are read-only (sandbox/manifest.py), so runs importing from it cannot
write bytecode into it. The background compiler (env_cache.EnvCache.compile_entry) therefore
compiles every `.py` of the entry that has no `.pyc` yet into a staging tree outside the venv
(`<staging>/<dir>/__pycache__/<name>.<tag>.pyc`, py_compile with cfile=, the same bytes
compileall would write), in parallel and at low priority; then `install_staged` moves each
finished `__pycache__` into place, making one directory writable for the rename only.

This file is run as a script by the entry's interpreter, which may be another Python version
than the agent's: it imports nothing but the standard library.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import py_compile
import stat
import sys
from concurrent.futures import ProcessPoolExecutor

PYCACHE = "__pycache__"


def _jobs(root: str, staging: str) -> list[tuple[str, str]]:
    """(source, staged .pyc) for each .py under `root` without its .pyc (symlinked directories
    are not followed, as compileall does not)."""
    jobs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != PYCACHE]
        for name in filenames:
            if not name.endswith(".py"):
                continue
            source = os.path.join(dirpath, name)
            cached = importlib.util.cache_from_source(source)
            if not os.path.exists(cached):
                jobs.append((source, os.path.join(staging, os.path.relpath(cached, root))))
    return jobs


def _compile(job: tuple[str, str]) -> bool:
    try:
        py_compile.compile(job[0], cfile=job[1], doraise=True)
    except (py_compile.PyCompileError, OSError, ValueError, SyntaxError):
        return False  # a file compileall cannot compile either (py2-only syntax...): imports compile it
    return True


def compile_into(root: str, staging: str) -> int:
    """Compile what `root` lacks into `staging`; return how many files were compiled."""
    jobs = _jobs(root, staging)
    if not jobs:
        return 0
    with ProcessPoolExecutor() as pool:
        return sum(pool.map(_compile, jobs, chunksize=32))


def install_staged(staging: str, root: str) -> int:
    """Move the staged `__pycache__` contents into the sealed tree at `root`; return the files moved.

    A directory is made writable (u+w) only for its rename and sealed again right after.
    """
    moved = 0
    for dirpath, dirnames, filenames in os.walk(staging):
        if os.path.basename(dirpath) != PYCACHE:
            continue
        dirnames[:] = []
        rel = os.path.relpath(dirpath, staging)
        target = os.path.join(root, rel)
        if os.path.isdir(target):
            with _writable(target):
                for name in filenames:
                    if not os.path.exists(os.path.join(target, name)):
                        os.rename(os.path.join(dirpath, name), os.path.join(target, name))
                        moved += 1
        elif os.path.isdir(os.path.dirname(target)):
            with _writable(os.path.dirname(target)):
                os.rename(dirpath, target)
            moved += len(filenames)
    return moved


@contextlib.contextmanager
def _writable(directory: str):  # noqa: ANN202 (the script runs on old Pythons too)
    mode = stat.S_IMODE(os.lstat(directory).st_mode)
    os.chmod(directory, mode | stat.S_IWUSR)
    try:
        yield
    finally:
        os.chmod(directory, mode)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -I -S staged_bytecode.py <venv> <staging>", file=sys.stderr)
        sys.exit(2)
    compile_into(sys.argv[1], sys.argv[2])
