"""Where an environment cache keeps its files, and how its small files are read and written.

    paths = CachePaths(root)
    paths.entry(key)              entries/<key>/ (what is in it: env_cache.py's map)
    paths.lock(key)               locks/<key>.lock: builders exclusive; readers, the compiler shared
    paths.bytecode_lock(key)      locks/<key>.bytecode.lock: the one process byte-compiling the entry
    paths.use_lock(key)           locks/<key>.use.lock: shared by every run whose venv came from it
    paths.tmp, paths.trash, paths.notes
    paths.remove(path)            out of sight first (an atomic rename into trash/), then deleted

    read_meta(entry)              meta.json of a complete entry (COMPLETE written), else None
    write_marker(path, content)   a marker written whole: temporary name, fsync, rename
    layout_dir(path)              a directory of the layout, writable by its owner only
    verify(entry), checker(entry) the entry's venv against its manifests (TamperedEntry)
    reachable(path, owner)        whether a task's user may traverse to `path`
    disk_usage(root)              bytes under `root`, each hard-linked file once

Nothing here takes a lock: callers (env_cache.py, cache_build.py, cache_bytecode.py,
cache_prune.py) hold the key's lock as their docstrings say.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path

from sandbox import manifest
from sandbox.manifest import TamperedEntry, remove_tree

Owner = tuple[int, int]

MARKER, META, LAST_USED, VENV = "COMPLETE", "meta.json", "last-used", "venv"
MANIFEST, BYTECODE_MANIFEST = "manifest.json", "bytecode-manifest.json"
BYTECODE_MARKER, STAGING = "BYTECODE-COMPLETE", "bytecode-staging"


class CachePaths:
    """The paths of one cache rooted at `root` (absolute)."""

    def __init__(self, root: Path):
        self.root = root
        self.entries = root / "entries"
        self.tmp = root / "tmp"
        self.trash = root / "trash"
        self.notes = root / "notes"

    def entry(self, key: str) -> Path:
        return self.entries / key

    def lock(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def bytecode_lock(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.bytecode.lock"

    def use_lock(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.use.lock"

    def make_build_dirs(self) -> None:
        """The root, tmp/ and entries/, before a build or a copy starts in tmp/."""
        for layout in (self.root, self.tmp, self.entries):
            layout_dir(layout)

    def remove(self, path: Path) -> None:
        """Move out of sight first (atomic), then delete at leisure."""
        self.trash.mkdir(parents=True, exist_ok=True)
        doomed = Path(tempfile.mkdtemp(dir=self.trash)) / path.name
        os.rename(path, doomed)
        remove_tree(doomed.parent)


def read_meta(entry: Path) -> dict | None:
    if not (entry / MARKER).is_file():
        return None
    try:
        meta = json.loads((entry / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "built_at" in meta and "frozen" in meta else None


def write_marker(path: Path, content: dict | None = None) -> None:
    """Write `path` completely (temporary name, fsync, rename): a reader never sees it half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as marker:
        marker.write(json.dumps(content) if content is not None else f"{time.time()}")
        marker.write("\n")
        marker.flush()
        os.fsync(marker.fileno())
    os.replace(tmp, path)


def layout_dir(path: Path) -> None:
    """Create a directory of the cache's layout; writable by its owner only, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o022:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o022)


def last_used(entry: Path) -> float:
    try:
        return (entry / LAST_USED).stat().st_mtime
    except OSError:
        return 0.0


def bytecode_size(entry: Path) -> int:
    try:
        return int(json.loads((entry / BYTECODE_MARKER).read_text()).get("size", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def checker(entry: Path) -> manifest.Checker:
    """The entry's manifests as a Checker; an entry without a readable manifest counts as tampered."""
    stamps = manifest.load(entry / MANIFEST)
    if stamps is None:
        raise TamperedEntry(MANIFEST, "missing or unreadable")
    return manifest.Checker(stamps, bytecode_stamps(entry))


def verify(entry: Path) -> None:
    """The entry's venv against its manifests (TamperedEntry naming the first difference)."""
    manifest.verify(entry / VENV, manifest.load(entry / MANIFEST), bytecode_stamps(entry))


def bytecode_stamps(entry: Path) -> manifest.Stamps | None:
    return manifest.load(entry / BYTECODE_MANIFEST) if (entry / BYTECODE_MARKER).is_file() else None


def reachable(path: Path, owner: Owner) -> bool:
    """Whether user `owner` (no supplementary groups, as tasks run) may traverse to `path`."""
    uid, gid = owner
    for ancestor in (path, *path.parents):
        st = ancestor.stat()
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def disk_usage(root: Path) -> int:
    """Bytes in the files under `root`, each hard-linked file once."""
    seen: set[int] = set()
    total = 0
    pending = [os.fspath(root)]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                    continue
                st = entry.stat(follow_symlinks=False)
                if st.st_ino not in seen:
                    seen.add(st.st_ino)
                    total += st.st_size
    return total
