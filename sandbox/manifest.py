"""Seal a cache entry when it is built, and tell a tampered one before it is reused.

    stamps = seal(venv)                        # files and directories read-only, for everyone
    save(entry / "manifest.json", stamps)      # inode, size, mtime, mode of every file; symlinks
    verify(venv, load(entry / "manifest.json"), bytecode=load(...))   # TamperedEntry, naming the file
    check = Checker(stamps, bytecode)          # the same comparison, one file at a time
    link_tree(venv, target, ..., check=check)  # (linkfarm.py) each file's lstat compared as it is linked
    check.finish()                             # raises TamperedEntry for a file that is gone
    remove_tree(path)                          # rmtree of a sealed tree (gives its directories u+w first)

Directories are sealed too (mode 0555): Python cannot write `__pycache__` into an entry that
runs are importing from (env_cache.py's overlay venvs), nor can a naive write add a file; a
writer of the agent's own user must chmod first. A file written to changes its size or mtime;
one replaced, added or removed changes an inode, adds a path or loses one; a directory made
writable again shows in its mode. Link counts are not compared (link farms come and go). What
this cannot see is a writer of the agent's own user who restores size and mtime after writing
(os.utime) or rewrites the manifest; running tasks as another user (agent.task_user) closes that.

Bytecode written after the entry was published (the background compiler) gets its own manifest
when it is complete; a `.pyc` that no manifest covers is a change like any other file.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import threading
from pathlib import Path

PYCACHE = "__pycache__"
_ANY_WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH

SEAL_WORKERS = 2
"""Threads sealing one tree (issue 24: the seal is on the cold build's way to the first line)."""


class TamperedEntry(Exception):
    """A cache entry differs from its manifest; `path` (relative to the venv) says where."""

    def __init__(self, path: str, change: str):
        super().__init__(f"{path}: {change}")
        self.path = path
        self.change = change


Stamps = dict[str, list]
"""Relative path -> [inode, size, mtime_ns, mode] for a file, or ["->", target] for a symlink."""


def seal(root: Path, only_bytecode: bool = False, workers: int = SEAL_WORKERS) -> Stamps:
    """Take write permission from files and directories (everyone's); stamp the files.

    With `only_bytecode`, stamp only files in `__pycache__` directories (the sealing still
    covers the whole tree: the byte-compiler made new directories). `workers` threads share
    the walk, one directory at a time (its stat and chmod calls release the GIL).
    """
    walk = _SealWalk(os.fspath(root), only_bytecode)
    helpers = [threading.Thread(target=walk.work, daemon=True) for _ in range(workers - 1)]
    for helper in helpers:
        helper.start()
    walk.work()
    for helper in helpers:
        helper.join()
    if walk.error is not None:
        raise walk.error
    return walk.stamps


class _SealWalk:
    """Directories still to seal, shared by the threads of one `seal`; each thread stamps into
    a dict of its own and merges it when nothing is left."""

    def __init__(self, root: str, only_bytecode: bool):
        self.pending = [(root, "")]
        self.busy = 0
        self.only_bytecode = only_bytecode
        self.stamps: Stamps = {}
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def work(self) -> None:
        stamps: Stamps = {}
        while (job := self._next()) is not None:
            try:
                found = _seal_dir(*job, stamps, self.only_bytecode) if self.error is None else []
            except BaseException as exc:   # handed to seal(), which raises it
                self.error, found = self.error or exc, []
            self._done(found)
        with self.cond:
            self.stamps.update(stamps)

    def _next(self) -> tuple[str, str] | None:
        with self.cond:
            while not self.pending and self.busy:
                self.cond.wait()
            if not self.pending:
                return None
            self.busy += 1
            return self.pending.pop()

    def _done(self, subdirs: list[tuple[str, str]]) -> None:
        with self.cond:
            self.pending += subdirs
            self.busy -= 1
            if subdirs or not self.busy:
                self.cond.notify_all()


def _seal_dir(path: str, rel: str, stamps: Stamps, only_bytecode: bool) -> list[tuple[str, str]]:
    """Seal one directory and stamp its files into `stamps`; return its subdirectories."""
    _chmod_without(path, _ANY_WRITE)
    in_pycache = os.path.basename(path) == PYCACHE
    subdirs = []
    with os.scandir(path) as listing:
        for entry in listing:
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_symlink():
                if not only_bytecode:
                    stamps[name] = ["->", os.readlink(entry.path)]
            elif entry.is_dir(follow_symlinks=False):
                subdirs.append((entry.path, name))
            elif not only_bytecode or in_pycache:
                stamps[name] = _seal_file(entry)
    return subdirs


def tree_size(stamps: Stamps) -> int:
    """Bytes in the stamped files (each hard-linked file once) and symlinks: the size of the
    sealed tree without walking it again."""
    seen: set[int] = set()
    total = 0
    for value in stamps.values():
        if value[0] == "->":
            total += len(os.fsencode(value[1]))
        elif value[0] not in seen:
            seen.add(value[0])
            total += value[1]
    return total


def stamp(st: os.stat_result) -> list:
    return [st.st_ino, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode)]


def save(path: Path, stamps: Stamps) -> None:
    path.write_text(json.dumps(stamps, separators=(",", ":")))


def load(path: Path) -> Stamps | None:
    """The stamps saved at `path`, or None when it is missing or unreadable."""
    try:
        stamps = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stamps if isinstance(stamps, dict) else None


class Checker:
    """Compares the files of one link_tree run with the entry's manifests."""

    def __init__(self, stamps: Stamps, bytecode: Stamps | None = None):
        self.stamps = stamps
        self.bytecode = bytecode or {}
        self.seen = 0

    def file(self, rel: str, st: os.stat_result, in_pycache: bool) -> bool:
        """True: link it. False: skip it (bytecode no manifest covers). Raises TamperedEntry."""
        expected = self.stamps.get(rel)
        if expected is not None:
            self.seen += 1
        elif in_pycache:
            expected = self.bytecode.get(rel)
            if expected is None:
                return False
        else:
            raise TamperedEntry(rel, "added after the entry was built")
        if (st.st_ino != expected[0] or st.st_size != expected[1] or st.st_mtime_ns != expected[2]
                or stat.S_IMODE(st.st_mode) != expected[3]):
            raise TamperedEntry(rel, _difference(expected, stamp(st)))
        return True

    def symlink(self, rel: str, pointer: str) -> None:
        expected = self.stamps.get(rel)
        if expected != ["->", pointer]:
            raise TamperedEntry(rel, "symlink added or retargeted after the entry was built")
        self.seen += 1

    def finish(self) -> None:
        """After the walk: every path of the main manifest was seen."""
        if self.seen != len(self.stamps):
            raise TamperedEntry("(entry)", f"{len(self.stamps) - self.seen} file(s) removed after it was built")


def _difference(expected: list, actual: list) -> str:
    if expected[0] == "->":
        return "a symlink was replaced by a file"
    if expected[0] != actual[0]:
        return "replaced by another file"
    if expected[1] != actual[1] or expected[2] != actual[2]:
        return f"written to (size {expected[1]} -> {actual[1]}, mtime changed: {expected[2] != actual[2]})"
    return f"permissions changed ({expected[3]:o} -> {actual[3]:o})"


def _seal_file(entry: os.DirEntry) -> list:
    st = entry.stat(follow_symlinks=False)
    mode = stat.S_IMODE(st.st_mode)
    if mode & _ANY_WRITE:
        mode &= ~_ANY_WRITE
        os.chmod(entry.path, mode)
    return [st.st_ino, st.st_size, st.st_mtime_ns, mode]


def _chmod_without(path: str, bits: int) -> None:
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    if mode & bits:
        os.chmod(path, mode & ~bits)


def verify(root: Path, stamps: Stamps | None, bytecode: Stamps | None = None) -> int:
    """Compare the whole tree at `root` with its manifests; return how many files were seen.

    Raises TamperedEntry naming the first difference: a file written to, replaced, added (a
    `.pyc` too, unless the bytecode manifest covers it) or removed, a symlink retargeted, a
    directory made writable. A missing manifest counts as a difference.
    """
    if stamps is None:
        raise TamperedEntry("manifest.json", "missing or unreadable")
    check = Checker(stamps, bytecode)
    pending = [(os.fspath(root), "")]
    while pending:
        path, rel = pending.pop()
        pending += _verify_dir(check, path, rel)
    check.finish()
    return check.seen


def _verify_dir(check: Checker, path: str, rel: str) -> list[tuple[str, str]]:
    """Check the entries of one directory; return its subdirectories to visit."""
    in_pycache = os.path.basename(path) == PYCACHE
    subdirs = []
    with os.scandir(path) as listing:
        for entry in listing:
            name = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                check.symlink(name, os.readlink(entry.path))
            elif stat.S_ISDIR(st.st_mode):
                if st.st_mode & _ANY_WRITE:
                    raise TamperedEntry(name, f"directory made writable (mode {stat.S_IMODE(st.st_mode):o})")
                subdirs.append((entry.path, name))
            elif not check.file(name, st, in_pycache):
                raise TamperedEntry(name, "bytecode added after the entry was sealed")
    return subdirs


def remove_tree(path: Path) -> None:
    """Delete a tree whose directories may be sealed (0555): give them u+w first."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, _dirnames, _filenames in os.walk(path):
            with contextlib.suppress(OSError):
                os.chmod(dirpath, stat.S_IMODE(os.lstat(dirpath).st_mode) | stat.S_IRWXU)
    shutil.rmtree(path, ignore_errors=True)
