"""Building one cache entry, or copying it from the shared cache, and publishing it.

    builds = EntryBuilds(paths, builder, exposures, shared, sync_bytecode=False)
    builds.build_or_fetch(key, python, reqs, extra, log)   # with the key's lock held exclusively

A build happens in tmp/<key>.<random>/ and is renamed into entries/<key> only when it is
complete (`publish`), so no run ever sees a half-built or half-sealed entry, and a crash midway
leaves only the temporary directory, which the next build of the key (or prune) removes. In
order, in the temporary directory:

    venv/           the install (EnvBuilder.build: uv venv, uv pip install beside pip's seed)
    (bytecode)      compileall, only with compile_bytecode="sync"
    seal            files and directories read-only; one walk stamps every file (manifest.py)
    manifest.json   those stamps
    BYTECODE-COMPLETE  with "sync" only
    meta.json       freeze list, size (from the stamps), the path the venv was built at
    last-used, COMPLETE (fsynced), then the rename into entries/

With `shared` (sandbox/shared_cache.py), a build first looks for the shared cache's copy; one
built here is published there.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sandbox import manifest
from sandbox.cache_layout import (
    BYTECODE_MARKER,
    LAST_USED,
    MANIFEST,
    MARKER,
    META,
    VENV,
    CachePaths,
    read_meta,
    write_marker,
)
from sandbox.exposure import Exposures
from sandbox.manifest import remove_tree
from sandbox.pyenv import EnvBuilder, Interpreter, compile_bytecode, venv_python
from sandbox.requirements import RequirementSet
from sandbox.shared_cache import SharedCache
from shipyard.errors import InfrastructureError

Log = Callable[[str], None]


class EntryBuilds:
    """Builds (or fetches) entries into the cache at `paths` and publishes them."""

    def __init__(self, paths: CachePaths, builder: EnvBuilder, exposures: Exposures, shared: SharedCache | None,
                 sync_bytecode: bool):
        self.paths, self.builder, self.exposures, self.shared = paths, builder, exposures, shared
        self.sync_bytecode = sync_bytecode

    def build_or_fetch(self, key: str, python: Interpreter, reqs: RequirementSet, extra: str, log: Log) -> None:
        """With the key's local lock held: the shared cache's copy when there is one, else a build
        (published to the shared cache when there is one)."""
        if self.shared is None:
            log(f"building environment {key[:12]} (Python {python.version}, {len(reqs.requirements)} lines)")
            self.build_entry(key, python, reqs, extra, log)
            return
        with self.shared.building(key, log) as ready:
            if ready and self.fetch_shared(key, log):
                return
            log(f"building environment {key[:12]} (Python {python.version}, {len(reqs.requirements)} lines)")
            self.build_entry(key, python, reqs, extra, log)
            self.shared.publish(key, self.paths.entry(key), log)

    def fetch_shared(self, key: str, log: Log) -> bool:
        """Copy the shared cache's entry into this cache, sealed and stamped here."""
        assert self.shared is not None
        self.paths.make_build_dirs()
        build_dir = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.paths.tmp))
        try:
            if not self.shared.copy_into(key, build_dir) or read_meta(build_dir) is None:
                remove_tree(build_dir)
                return False
            manifest.save(build_dir / MANIFEST, manifest.seal(build_dir / VENV))
            (build_dir / LAST_USED).touch()
            self.publish(build_dir, key)
        except BaseException:
            remove_tree(build_dir)
            raise
        log(f"environment {key[:12]} copied from the shared cache {self.shared.root}")
        return True

    def build_entry(self, key: str, python: Interpreter, reqs: RequirementSet, extra: str, log: Log) -> None:
        self.paths.make_build_dirs()
        build_dir = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.paths.tmp))
        try:
            sealing = _Sealing(build_dir, self.sync_bytecode)
            frozen = self.builder.build(python, reqs, sealing.venv, log, beside=sealing)
            size = sealing.size()
            if sealing.compiled:
                write_marker(build_dir / BYTECODE_MARKER, {"size": size})
            meta = {
                "key": key, "python": python.identity(), "requirements": reqs.canonical(),
                "extra": extra, "frozen": frozen, "built_at": str(sealing.venv),
                "created": time.time(), "size": size,
            }
            (build_dir / META).write_text(json.dumps(meta, indent=1))
            (build_dir / LAST_USED).touch()
            write_marker(build_dir / MARKER)
            self.publish(build_dir, key)
        except BaseException:
            remove_tree(build_dir)
            raise

    def publish(self, build_dir: Path, key: str) -> None:
        """Rename a sealed build into entries/; readable by a task's user (runs import from it);
        verified as of now when no run that could write the cache is alive."""
        os.chmod(build_dir, 0o755)
        with self.exposures.quiet() as quiet:
            if quiet:
                self.exposures.record(build_dir)
        os.rename(build_dir, self.paths.entry(key))


class _Sealing:
    """The build's seal, called by EnvBuilder.build once the venv's files are in place, while
    uv takes the freeze list (`beside`): byte-compile first with "sync", then seal and stamp
    in one walk, then write manifest.json. Called again after a fallback rebuild."""

    def __init__(self, build_dir: Path, sync_bytecode: bool):
        self.build_dir, self.venv, self.sync_bytecode = build_dir, build_dir / VENV, sync_bytecode
        self.compiled = False
        self.stamps: manifest.Stamps | None = None

    def __call__(self) -> None:
        self.compiled = self.sync_bytecode and compile_bytecode(venv_python(self.venv), self.venv)
        self.stamps = manifest.seal(self.venv)   # one walk: sealed, stamped, and sized from the stamps
        manifest.save(self.build_dir / MANIFEST, self.stamps)

    def size(self) -> int:
        """Bytes of the sealed venv (from its stamps) and its manifest."""
        if self.stamps is None:
            raise InfrastructureError("the environment was built without its seal", kind="unsealed")
        return manifest.tree_size(self.stamps) + (self.build_dir / MANIFEST).stat().st_size
