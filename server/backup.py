"""`shipyard backup` / `shipyard restore` for the SQLite default: the database and the files
store in one tar archive, with a manifest, taken while the server runs.

    backup(data_dir, db_url, target)     snapshot the database (SQLite's online backup API: one
                                         consistent read transaction; writers go on in the WAL),
                                         then add every stored file, then the manifest
    restore(archive, data_dir, force=)   check the manifest and checksums, unpack beside the data,
                                         then move it into place (anything there first is kept
                                         aside in before-restore-<time>/ with --force)

Order makes it consistent: the database is copied first, so every file a copied row names was
uploaded (moved into place, server/files/upload.py) before the copy and is in the archive; files
uploaded later may be too, unreferenced. Each file is read from an open descriptor, so one
replaced meanwhile is archived whole, old or new. PostgreSQL is backed up with pg_dump
(docs/operations.md): refused here by name.

Archive layout: shipyard.db, files/<object path>..., manifest.json (last: it counts what was
archived); `.tar` plain, `.tar.gz`/`.tgz` compressed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from shipyard import __version__, clock
from shipyard.errors import ConfigError

FORMAT = "shipyard-backup"
VERSION = 1
DB_NAME = "shipyard.db"
MANIFEST = "manifest.json"
_SKIP_PREFIX = ".upload-"  # an upload still arriving (server/files/upload.py TEMP_PREFIX)


@dataclass
class Manifest:
    created: str
    schema_revision: str | None
    db_bytes: int
    db_sha256: str
    files: int = 0
    files_bytes: int = 0
    shipyard: str = __version__
    format: str = FORMAT
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            if data.get("format") != FORMAT:
                raise ValueError("not a Shipyard backup")
            if data.get("version") != VERSION:
                raise ValueError(f"backup format version {data.get('version')}, this Shipyard reads {VERSION}")
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"bad backup manifest: {exc}") from None


def sqlite_path(db_url: str) -> Path:
    if not db_url.startswith("sqlite:///"):
        raise ConfigError("shipyard backup/restore cover the SQLite database; back up PostgreSQL with pg_dump and "
                          "pg_restore (docs/operations.md, \"Backups\"), and the files dir with tar")
    return Path(db_url[len("sqlite:///"):])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot(db: Path, into: Path) -> str | None:
    """A consistent copy of a live SQLite database; its schema revision."""
    if not db.is_file():
        raise ConfigError(f"no database at {db}: nothing to back up (is --data-dir right?)")
    source = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(into)
    try:
        source.backup(target)  # all pages in one step: one read transaction, so one instant
        row = target.execute("SELECT version_num FROM alembic_version").fetchone() if target.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone() else None
        return row[0] if row else None
    finally:
        target.close()
        source.close()


def _stored_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith(_SKIP_PREFIX):
                yield Path(dirpath) / name


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str) -> int | None:
    """Add one file read from an open descriptor; None when it was deleted meanwhile."""
    try:
        with open(path, "rb") as f:
            info = tar.gettarinfo(arcname=arcname, fileobj=f)
            tar.addfile(info, f)
            return info.size
    except FileNotFoundError:
        return None


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    tar.addfile(info, _BytesReader(data))


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.pos + size
        chunk, self.pos = self.data[self.pos:end], min(end, len(self.data))
        return chunk


def _create(path: Path, partial: Path) -> tarfile.TarFile:
    if path.name.endswith((".tar.gz", ".tgz")):
        return tarfile.open(partial, "w:gz", compresslevel=1)  # files are mostly compressed already
    return tarfile.open(partial, "w")


def backup(data_dir: Path, db_url: str, target: Path) -> Manifest:
    """Write one archive of the database and the files store (see the module's docstring)."""
    db = sqlite_path(db_url)
    target = target.resolve()
    partial = target.with_name(f".{target.name}.partial")
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=db.parent) as tmp:
        copy = Path(tmp) / DB_NAME
        revision = _snapshot(db, copy)
        manifest = Manifest(created=clock.iso(), schema_revision=revision, db_bytes=copy.stat().st_size,
                            db_sha256=_sha256(copy))
        with _create(target, partial) as tar:
            tar.add(copy, arcname=DB_NAME)
            _add_files(tar, data_dir / "files", manifest)
            _add_bytes(tar, MANIFEST, json.dumps(asdict(manifest), indent=1).encode())
    os.replace(partial, target)
    return manifest


def _add_files(tar: tarfile.TarFile, root: Path, manifest: Manifest) -> None:
    for path in _stored_files(root) if root.is_dir() else ():
        size = _add_file(tar, path, "files/" + path.relative_to(root).as_posix())
        if size is not None:
            manifest.files += 1
            manifest.files_bytes += size


def read_manifest(archive: Path) -> Manifest:
    """The manifest of an archive (its last member: it counts what was archived)."""
    found = None
    with _open_archive(archive) as tar:
        for member in tar:
            if member.name == MANIFEST:
                reader = tar.extractfile(member)
                found = reader.read() if reader else None
    if not found:
        raise ConfigError(f"{archive} has no manifest: not a finished Shipyard backup")
    return Manifest.parse(found)


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise ConfigError(f"cannot read backup {archive}: {exc}") from None


def _occupied(data_dir: Path) -> list[Path]:
    names = [DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", "files"]
    return [data_dir / n for n in names if (data_dir / n).exists() and not _empty_dir(data_dir / n)]


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def restore(archive: Path, data_dir: Path, *, force: bool = False) -> Manifest:
    """Unpack a backup into data_dir (stop its server first). A data dir holding a database or
    files is refused unless `force`; then what was there is moved into before-restore-<time>/."""
    manifest = read_manifest(archive)
    data_dir.mkdir(parents=True, exist_ok=True)
    occupied = _occupied(data_dir)
    if occupied and not force:
        raise ConfigError(f"{data_dir} already holds a database or files ({', '.join(p.name for p in occupied)}): "
                          "stop its server and pass --force to restore over it (they are kept aside)")
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir) as tmp:
        staged = Path(tmp)
        _unpack(archive, staged)
        _verify(manifest, staged)
        if occupied:
            _set_aside(data_dir, occupied)
        os.replace(staged / DB_NAME, data_dir / DB_NAME)
        if (staged / "files").is_dir():
            shutil.rmtree(data_dir / "files", ignore_errors=True)
            os.replace(staged / "files", data_dir / "files")
        (data_dir / "files").mkdir(exist_ok=True)
    return manifest


def _unpack(archive: Path, into: Path) -> None:
    with _open_archive(archive) as tar:
        members = [m for m in tar if m.name != MANIFEST]
        for member in members:
            if not _expected(member):
                raise ConfigError(f"unexpected member {member.name!r} in {archive}: not a Shipyard backup")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, members=members, filter="data")
        else:  # Python before 3.10.12 / 3.11.4: _expected() has ruled out links and escaping paths
            tar.extractall(into, members=members)


def _expected(member: tarfile.TarInfo) -> bool:
    parts = Path(member.name).parts
    inside = not member.name.startswith("/") and ".." not in parts
    return inside and (member.isfile() or member.isdir()) and (member.name == DB_NAME or parts[0] == "files")


def _verify(manifest: Manifest, staged: Path) -> None:
    db = staged / DB_NAME
    if not db.is_file() or _sha256(db) != manifest.db_sha256:
        raise ConfigError("the backup's database does not match its manifest's checksum: the archive is damaged")
    count = sum(1 for _ in _stored_files(staged / "files")) if (staged / "files").is_dir() else 0
    if count != manifest.files:
        raise ConfigError(f"the backup holds {count} files, its manifest says {manifest.files}: the archive is damaged")


def _set_aside(data_dir: Path, occupied: list[Path]) -> Path:
    aside = data_dir / f"before-restore-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for path in occupied:
        os.replace(path, aside / path.name)
    return aside
