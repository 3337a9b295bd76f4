"""An environment cache directory shared by a cluster's workers (NFS), next to each one's own.

    shared = SharedCache(Path("/nfs/shipyard/venvs"), stale_s=3600)
    with shared.building(key, log) as ready:   # one host builds a key; the others wait for it
        if ready: shared.copy_into(key, build_dir)    # published by another host: copy, re-seal
        else: ...build locally..., shared.publish(key, entry_dir, log)

Layout, like the local cache's (env_cache.py):

    entries/<key>/           a published entry (venv/, meta.json, COMPLETE), never modified
    tmp/<key>.<host>.<pid>/  a copy being published, renamed into entries/ when complete
    locks/<key>.building     created exclusively (O_EXCL, which NFSv3+ honours) by the host
                             building the key; JSON {host, pid, since}; older than `stale_s`
                             it is taken over (its host died)

flock does not reach across NFS clients, so the cross-host lock is a file that exists or not.
Entries are published by rename, so a reader sees a whole entry or none. The local cache
always works on its own copy: files on NFS are copied, not linked, into the local entry, which
is then sealed and stamped locally (inodes differ per host). Bytecode is not shared: each
host compiles its own copy in the background. The shared directory is not pruned by workers.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

Log = Callable[[str], None]

SKIPPED = ("last-used", "manifest.json", "bytecode-manifest.json", "BYTECODE-COMPLETE", "VERIFIED", "bytecode-staging")
"""Entry files that describe one host's copy (its stamps, its last check: env_cache.py); not
published, not copied back."""


class SharedCache:
    def __init__(self, root: Path, stale_s: float = 3600.0, poll_s: float = 0.5):
        self.root = Path(root).expanduser().absolute()
        self.stale_s = stale_s
        self.poll_s = poll_s

    def has(self, key: str) -> bool:
        return (self.root / "entries" / key / "COMPLETE").is_file()

    @contextlib.contextmanager
    def building(self, key: str, log: Log) -> Iterator[bool]:
        """Yield True when the entry is (or becomes) published by another host; else hold the
        key's building lock, yield False, and release it afterwards."""
        if self.has(key):
            yield True
            return
        lock = self.root / "locks" / f"{key}.building"
        waited = False
        while not self._take(lock):
            if not waited:
                log(f"environment {key[:12]} is being built by {self._holder(lock)}; waiting for it in the shared cache")
                waited = True
            time.sleep(self.poll_s)
            if self.has(key):
                yield True
                return
        try:
            yield self.has(key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()

    def copy_into(self, key: str, build_dir: Path) -> bool:
        """Copy the published entry (without per-host files and bytecode) into `build_dir`."""
        source = self.root / "entries" / key
        try:
            shutil.copytree(source, build_dir, symlinks=True, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", *SKIPPED))
        except (FileNotFoundError, shutil.Error):
            return False
        return (build_dir / "COMPLETE").is_file()

    def publish(self, key: str, entry: Path, log: Log) -> bool:
        """Copy a complete local entry to the shared directory (rename: all or nothing)."""
        if self.has(key):
            return False
        tmp = self.root / "tmp" / f"{key}.{socket.gethostname()}.{os.getpid()}"
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            (self.root / "entries").mkdir(parents=True, exist_ok=True)
            shutil.copytree(entry, tmp, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", *SKIPPED))
            os.rename(tmp, self.root / "entries" / key)
        except OSError as exc:   # published meanwhile by another host, or the share is full/gone
            _remove(tmp)
            if not self.has(key):
                log(f"WARNING: could not publish environment {key[:12]} to the shared cache {self.root}: {exc}")
            return False
        log(f"environment {key[:12]} published to the shared cache {self.root}")
        return True

    def _take(self, lock: Path) -> bool:
        lock.parent.mkdir(parents=True, exist_ok=True)
        claim = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if self._stale(lock):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
            return False
        with os.fdopen(fd, "w") as out:
            out.write(claim)
        return True

    def _stale(self, lock: Path) -> bool:
        try:
            return time.time() - lock.stat().st_mtime > self.stale_s
        except FileNotFoundError:
            return False

    @staticmethod
    def _holder(lock: Path) -> str:
        try:
            info = json.loads(lock.read_text())
            return f"{info['host']} (pid {info['pid']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another worker"


def _remove(path: Path) -> None:
    if path.exists():
        for dirpath, dirnames, _files in os.walk(path):
            for name in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, name), 0o755)
        shutil.rmtree(path, ignore_errors=True)
