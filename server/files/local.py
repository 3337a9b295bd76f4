"""The files store on this machine's disk (the default backend): data_dir/files.

An upload is written into a temp file `.upload-*` in its target's own directory and moved into
place with os.replace at commit, so a broken request replaces nothing; abort removes the temp
file and any directory the upload created (if still empty). A path that resolves outside the
root, also through a symlink, is 403. `files_min_free_mb` keeps free space on the filesystem:
an upload that would go below it is 507, checked before reading and while writing.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from server import errors
from server.files.backend import READ_CHUNK, FileBackend, ObjectInfo, Pending, object_names, upload_names

MIB = 1 << 20
TEMP_PREFIX = ".upload-"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def confine(root: Path, object_path: str, names: list[str] | None = None) -> Path:
    """Resolve `object_path` under `root`, refusing the root itself and anything outside it."""
    root_resolved = root.resolve()
    target = root_resolved.joinpath(*(names or object_names(object_path))).resolve()
    if root_resolved not in target.parents:
        raise errors.APIError(403, 0, f"the path leads outside the files root: {object_path[:200]!r}")
    return target


def free_bytes(root: Path) -> int:
    st = os.statvfs(root)
    return st.f_bavail * st.f_frsize


class LocalBackend(FileBackend):
    kind = "local"

    def __init__(self, root: Path, min_free_mb: int = 0):
        self.root = root
        self.min_free_mb = max(min_free_mb, 0)
        root.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"local directory {self.root}"

    # -- reading ------------------------------------------------------------------------------
    def stat(self, object_path: str) -> ObjectInfo | None:
        target = confine(self.root, object_path)
        try:
            st = target.stat()
        except OSError:
            return None
        if not target.is_file():
            return None
        return ObjectInfo(st.st_size, st.st_mtime, f'"{st.st_mtime_ns:x}-{st.st_size:x}"')

    def read(self, object_path: str, start: int, end: int) -> Iterator[bytes]:
        handle = confine(self.root, object_path).open("rb")
        return _chunks(handle, start, end)

    # -- writing ------------------------------------------------------------------------------
    def open_upload(self, object_path: str) -> Pending:
        target = confine(self.root, object_path, upload_names(object_path))
        if target.is_dir():
            raise errors.APIError(409, 0, f"a directory exists at {object_path!r}; a file cannot replace it")
        pending = LocalPending(self, object_path, target)
        pending.open()
        return pending

    def delete(self, object_path: str) -> None:
        target = confine(self.root, object_path)
        if target.is_dir():
            raise errors.APIError(409, 0, f"DELETE removes files, not directories: {object_path[:200]!r}")
        try:
            if not target.is_file():
                raise FileNotFoundError(object_path)
            target.unlink()
        except FileNotFoundError:
            raise errors.APIError(404, 0, f"not found: {object_path[:200]}") from None

    def check_space(self, coming: int = 0) -> None:
        if not self.min_free_mb:
            return
        free = free_bytes(self.root)
        if free - coming < self.min_free_mb * MIB:
            raise self.disk_full(free)

    def disk_full(self, free: int | None = None) -> errors.APIError:
        if free is None:
            free = free_bytes(self.root)
        return errors.APIError(507, 0, f"not enough free disk for this upload: {free // MIB} MiB free on the "
                                       f"files store, and files_min_free_mb={self.min_free_mb} MiB must stay free")


def _chunks(handle: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        left = end - start + 1
        while left > 0:
            data = handle.read(min(READ_CHUNK, left))
            if not data:
                return
            left -= len(data)
            yield data


class LocalPending(Pending):
    def __init__(self, backend: LocalBackend, name: str, target: Path):
        self.backend, self.name, self.target = backend, name, target
        self.tmp: Path | None = None
        self.out: BinaryIO | None = None
        self.created_dirs: list[Path] = []

    def open(self) -> None:
        try:
            self._make_parents(self.target.parent)
            fd, tmp = tempfile.mkstemp(dir=self.target.parent, prefix=TEMP_PREFIX)
        except OSError as exc:
            self.abort()
            raise self._os_error(exc) from None
        self.tmp = Path(tmp)
        self.out = os.fdopen(fd, "wb")

    def write(self, data: bytes | memoryview) -> None:
        assert self.out is not None, "write after commit or abort"
        try:
            self.out.write(data)
        except OSError as exc:
            raise self._os_error(exc) from None

    def commit(self) -> None:
        assert self.tmp is not None, "commit after commit or abort"
        try:
            self._close()
            os.replace(self.tmp, self.target)
        except OSError as exc:
            raise self._os_error(exc) from None
        self.tmp = None

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
        for folder in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self.created_dirs = []

    def _close(self) -> None:
        if self.out is not None:
            out, self.out = self.out, None
            out.close()

    def _make_parents(self, folder: Path) -> None:
        missing = []
        while not folder.exists() and folder != self.backend.root.resolve():
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue  # made by a concurrent upload: not ours to remove
            self.created_dirs.append(path)

    def _os_error(self, exc: OSError) -> errors.APIError:
        if exc.errno in _DISK_FULL:
            return self.backend.disk_full()
        if isinstance(exc, (FileExistsError, NotADirectoryError, IsADirectoryError)):
            return errors.APIError(409, 0, f"a file or directory is in the way for {self.name!r}: {exc.strerror}")
        return errors.APIError(500, 0, f"cannot store the upload for {self.name!r}: {exc.strerror}")
