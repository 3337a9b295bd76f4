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
import subprocess
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


def seal(root: Path, only_bytecode: bool = False, workers: int = SEAL_WORKERS, native: bool = True) -> Stamps:
    """Take write permission from files and directories (everyone's); stamp the files.

    With `only_bytecode`, stamp only files in `__pycache__` directories (the sealing still
    covers the whole tree: the byte-compiler made new directories). The whole-tree seal is done
    by one GNU `find` where it is (`native`; half the walk's time on a 6,800-path venv whose files
    all need their write bits taken, and on the cold build's way to the first line); else, or when it fails, `workers` threads
    share a walk, one directory at a time (its stat and chmod calls release the GIL), which also
    names the file a failure was about.
    """
    if native and not only_bytecode:
        stamps = _seal_native(os.fspath(root))
        if stamps is not None:
            return stamps
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


# one record a path, NUL-separated: type, inode, size, mtime (s.ns), mode (octal), path, target
_FIND_FORMAT = "%y\\0%i\\0%s\\0%T@\\0%m\\0%P\\0%l\\0"
_FIELDS = 7


def _seal_native(root: str) -> Stamps | None:
    """The walk's seal and stamps by one GNU `find`: it prints every path's stamp and hands the
    paths that still have a write bit (not symlinks, which the walk leaves alone too) to `chmod
    a-w` in batches. The stamps need no order with the chmod: it changes neither inode, size nor
    mtime, and a stamp's mode is taken without the write bits. uv links its cached files, which
    an earlier seal left read-only, so mostly the new directories are changed. None where find
    or chmod is missing or either fails: the caller walks instead."""
    chmod_bin, find_bin = shutil.which("chmod"), shutil.which("find")
    if chmod_bin is None or find_bin is None:
        return None
    command = [find_bin, root, "-printf", _FIND_FORMAT, ",", "!", "-type", "l", "-perm", "/222",
               "-exec", chmod_bin, "a-w", "--", "{}", "+"]
    stamps: Stamps = {}
    rest = b""
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as lister:
        assert lister.stdout is not None
        out = lister.stdout.fileno()
        while chunk := os.read(out, 1 << 16):   # parsed while find still walks
            fields = (rest + chunk).split(b"\0")
            whole = (len(fields) - 1) // _FIELDS * _FIELDS
            try:
                _parse_records(root, fields[:whole], stamps)
            except ValueError:   # not the records asked for
                lister.kill()
                return None
            rest = b"\0".join(fields[whole:])
    if lister.returncode != 0 or rest:
        return None   # a failure, or not the format asked for (a find without -printf's escapes)
    return stamps


def _parse_records(root: str, fields: list[bytes], stamps: Stamps) -> None:
    for i in range(0, len(fields), _FIELDS):
        kind, ino, size, mtime, mode, rel, target = fields[i:i + _FIELDS]
        if kind == b"d":   # the root's record too (its relative path is empty)
            continue
        name = os.fsdecode(rel)
        if kind == b"l":
            stamps[name] = ["->", os.fsdecode(target)]
            continue
        seconds, _, fraction = mtime.partition(b".")
        if seconds.startswith(b"-"):   # before 1970: find's fraction is not a plain offset
            stamps[name] = stamp(os.lstat(os.path.join(root, name)))
            stamps[name][3] &= ~_ANY_WRITE
            continue
        mtime_ns = int(seconds) * 1_000_000_000 + int((fraction + b"000000000")[:9])
        stamps[name] = [int(ino), int(size), mtime_ns, int(mode, 8) & ~_ANY_WRITE]


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
    """Compact JSON; orjson writes a venv's manifest in a tenth of json's time (it is on the cold
    build's path). A name that is not UTF-8 (a surrogate escape) goes through json."""
    import orjson  # here: an idle daemon never builds

    try:
        path.write_bytes(orjson.dumps(stamps))
    except TypeError:
        path.write_text(json.dumps(stamps, separators=(",", ":")))


def load(path: Path) -> Stamps | None:
    """The stamps saved at `path`, or None when it is missing or unreadable."""
    import orjson

    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        stamps = orjson.loads(data)
    except orjson.JSONDecodeError:   # also json's escapes of a non-UTF-8 name, which orjson refuses
        try:
            stamps = json.loads(data)
        except ValueError:
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
