"""Recreate a directory tree elsewhere with hard links instead of copies.

A venv reused from the cache is a "link farm": directories are created, regular files are
`os.link`ed to the cached ones (no data copied), symlinks are recreated. The few small text
files that embed the venv's absolute path (bin/ script shebangs, bin/activate*, pyvenv.cfg)
are written as real copies with the path replaced, so the new venv is self-consistent and
editing them never touches the cache.

When the destination is on another filesystem, hard links are impossible and files are copied.
"""
from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

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


def link_tree(src: Path, dst: Path, old_prefix: str, new_prefix: str) -> LinkStats:
    """Mirror `src` at `dst` (which must not exist); replace `old_prefix` by `new_prefix` in path-bearing files."""
    stats = LinkStats()
    old, new = old_prefix.encode(), new_prefix.encode()
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel = here.relative_to(src)
        target_dir = dst / rel
        target_dir.mkdir(parents=rel == Path("."))
        shutil.copymode(here, target_dir)
        stats.directories += 1
        for name in dirnames[:]:
            if (here / name).is_symlink():  # os.walk lists symlinks to directories as dirs
                dirnames.remove(name)
                _relink(here / name, target_dir / name, old_prefix, new_prefix, stats)
        for name in filenames:
            _place_file(here / name, target_dir / name, rel / name, (old, new), stats)
    return stats


def _place_file(source: Path, target: Path, rel: Path, prefixes: tuple[bytes, bytes], stats: LinkStats) -> None:
    if source.is_symlink():
        _relink(source, target, prefixes[0].decode(), prefixes[1].decode(), stats)
        return
    if _may_embed_path(rel) and _rewrite(source, target, *prefixes):
        stats.rewritten += 1
        return
    try:
        os.link(source, target)
        stats.linked += 1
    except OSError as exc:
        if exc.errno not in _CROSS_DEVICE:
            raise
        shutil.copy2(source, target)
        stats.copied += 1


def _may_embed_path(rel: Path) -> bool:
    parts = rel.parts
    return (len(parts) == 2 and parts[0] in REWRITE_DIRS) or rel.as_posix() in REWRITE_FILES


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


def _relink(source: Path, target: Path, old_prefix: str, new_prefix: str, stats: LinkStats) -> None:
    pointer = os.readlink(source)
    if pointer == old_prefix or pointer.startswith(old_prefix + "/"):
        pointer = new_prefix + pointer[len(old_prefix):]
    os.symlink(pointer, target)
    stats.symlinks += 1
