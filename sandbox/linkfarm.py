"""Recreate a directory tree elsewhere with hard links instead of copies.

A venv reused from the cache is a "link farm": directories are created, regular files are
`os.link`ed to the cached ones (no data copied), symlinks are recreated. The few small text
files that embed the venv's absolute path (bin/ script shebangs, bin/activate*, pyvenv.cfg)
are written as real copies with the path replaced, so the new venv is self-consistent and
editing them never touches the cache.

When the destination is on another filesystem, hard links are impossible and files are copied.

Options for a shared cache (env_cache.py): `check`, a manifest.Checker, sees every source
file's lstat before it is linked and stops the farm at the first one that changed since the
entry was sealed; `owner` (uid, gid) gets the farm's directories and its private copies, never
a hard-linked file (that inode is the cache's: chown would hand the cache file to the task);
`skip`, directories (relative paths) made empty instead of mirrored: an overlay venv's
site-packages (sandbox/overlay.py). The farm's directories are writable by their owner even
where the source's are sealed read-only.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sandbox.manifest import Checker

REWRITE_LIMIT = 1 << 20
"""Files larger than this are never rewritten (no launcher script is that big)."""

SHEBANG_LIMIT = 127
"""Longest `#!` line every Linux kernel honours; longer ones get a /bin/sh trampoline."""

REWRITE_DIRS = ("bin",)
REWRITE_FILES = ("pyvenv.cfg",)
_CROSS_DEVICE = (errno.EXDEV, errno.EPERM, errno.EMLINK)


@dataclass
class LinkStats:
    linked: int = 0
    rewritten: int = 0
    copied: int = 0
    symlinks: int = 0
    directories: int = 0


def link_tree(src: Path, dst: Path, old_prefix: str, new_prefix: str, *, check: Checker | None = None,
              owner: tuple[int, int] | None = None, skip: Collection[str] = ()) -> LinkStats:
    """Mirror `src` at `dst` (which must not exist); replace `old_prefix` by `new_prefix` in path-bearing files.

    `src` may be byte-compiled while this runs (see env_cache.py): in `__pycache__` only
    finished `*.pyc` files are linked, never a compiler's temporary `*.pyc.<n>`, and one that
    is renamed away between listing and linking is skipped. With `check`, a file that differs
    from the entry's manifest raises manifest.TamperedEntry (the caller removes `dst`).
    """
    stats = LinkStats()
    farm = _Farm(old_prefix, new_prefix, stats, check, owner)
    farm.skip = frozenset(skip)
    dst.parent.mkdir(parents=True, exist_ok=True)
    farm.mirror(os.fspath(src), os.fspath(dst), "")
    return stats


class _Farm:
    """One link_tree run: os.scandir (its d_type saves a stat per file) and plain string paths."""

    def __init__(self, old_prefix: str, new_prefix: str, stats: LinkStats, check: Checker | None,
                 owner: tuple[int, int] | None) -> None:
        self.old_prefix, self.new_prefix = old_prefix, new_prefix
        self.old, self.new = old_prefix.encode(), new_prefix.encode()
        self.stats = stats
        self.check = check
        self.owner = owner
        self.cross_device = False
        self.skip: frozenset[str] = frozenset()

    def mirror(self, src: str, dst: str, rel: str) -> None:
        os.mkdir(dst)
        os.chmod(dst, stat.S_IMODE(os.stat(src).st_mode) | stat.S_IWUSR)
        self.give(dst)
        self.stats.directories += 1
        if rel in self.skip:
            return
        pycache = os.path.basename(src) == "__pycache__"
        rewritable = rel in REWRITE_DIRS
        with os.scandir(src) as listing:
            entries = list(listing)
        for entry in entries:
            target = os.path.join(dst, entry.name)
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_symlink():  # to a file or a directory: recreated, never followed
                self.symlink(entry.path, target, name)
            elif entry.is_dir(follow_symlinks=False):
                self.mirror(entry.path, target, name)
            elif pycache and not entry.name.endswith(".pyc"):
                continue  # a byte-compiler's temporary file, renamed into place when complete
            elif self.check is not None and not self.checked(entry, name, pycache):
                continue  # bytecode that no manifest covers yet
            elif (rewritable or (not rel and entry.name in REWRITE_FILES)) and _rewrite(
                Path(entry.path), Path(target), self.old, self.new
            ):
                self.give(target, private=True)
                self.stats.rewritten += 1
            else:
                self.place(entry.path, target, pycache)

    def checked(self, entry: os.DirEntry, name: str, pycache: bool) -> bool:
        assert self.check is not None  # only called when a checker is set
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            if pycache:
                return False  # renamed away by the compiler meanwhile
            raise
        return self.check.file(name, st, pycache)

    def symlink(self, source: str, target: str, name: str) -> None:
        pointer = os.readlink(source)
        if self.check is not None:
            self.check.symlink(name, pointer)
        _relink(pointer, target, self.old_prefix, self.new_prefix, self.stats)
        if self.owner is not None:
            os.lchown(target, *self.owner)

    def give(self, path: str, private: bool = False) -> None:
        """Hand a directory or a private copy to `owner`; a private copy becomes writable by it."""
        if private:
            os.chmod(path, stat.S_IMODE(os.stat(path).st_mode) | stat.S_IWUSR)
        if self.owner is not None:
            os.chown(path, *self.owner)

    def place(self, source: str, target: str, pycache: bool) -> None:
        if not self.cross_device:
            try:
                os.link(source, target, follow_symlinks=False)
                self.stats.linked += 1
                return
            except FileNotFoundError:
                if pycache:
                    return
                raise
            except OSError as exc:
                if exc.errno not in _CROSS_DEVICE:
                    raise
                self.cross_device = exc.errno == errno.EXDEV  # every later link would fail too
        shutil.copy2(source, target)
        self.give(target, private=True)
        self.stats.copied += 1


def _rewrite(source: Path, target: Path, old: bytes, new: bytes) -> bool:
    """Write a path-adjusted copy of `source` if it mentions `old`; False when it does not."""
    if source.stat().st_size > REWRITE_LIMIT:
        return False
    data = source.read_bytes()
    if old not in data:
        return False
    target.write_bytes(_fit_shebang(data.replace(old, new)))
    shutil.copystat(source, target)
    return True


def _fit_shebang(data: bytes) -> bytes:
    """A `#!/very/long/path/python` line the kernel would truncate becomes a /bin/sh trampoline."""
    first, _, rest = data.partition(b"\n")
    interpreter = first[2:].strip()
    if not first.startswith(b"#!") or len(first) <= SHEBANG_LIMIT or b" " in interpreter:
        return data
    if not os.path.basename(interpreter).startswith(b"python"):
        return data
    return b"#!/bin/sh\n'''exec' '" + interpreter + b"' \"$0\" \"$@\"\n' '''\n" + rest


def _relink(pointer: str, target: str, old_prefix: str, new_prefix: str, stats: LinkStats) -> None:
    if pointer == old_prefix or pointer.startswith(old_prefix + "/"):
        pointer = new_prefix + pointer[len(old_prefix):]
    os.symlink(pointer, target)
    stats.symlinks += 1


def give_tree(root: Path, owner: tuple[int, int]) -> int:
    """chown `root` and what is under it to `owner`, except files with more than one link.

    A file with several links may be a cache's (an environment entry's, a git object shared by
    `clone --local`): handing it over would let its new owner change it for everyone. Those stay
    as they are (readable, as before). Returns how many were left alone.
    """
    shared = 0
    os.lchown(root, *owner)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.lchown(os.path.join(dirpath, name), *owner)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                shared += 1
                continue
            os.lchown(path, *owner)
    return shared
