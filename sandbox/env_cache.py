"""A content-addressed cache of built Python environments, shared by concurrent agents.

    cache = EnvCache(Path("~/.shipyard/env-cache").expanduser(), max_bytes=50 << 30)
    result = cache.materialize(requirements, interpreter, Path("/work/task-123/venv"), log=log)
    # run: result.python <entry point>; when the run has ended: result.lease.close()
    key, built = cache.ensure(requirements, interpreter)   # build only (prepare while queued)

The key is sha256 of (interpreter identity: implementation, version, platform, path; the
normalized requirements; the builder's settings; an `extra` string for image/CUDA). Layout:

    entries/<key>/venv/         the environment, built once, sealed read-only, never modified afterwards
    entries/<key>/meta.json     freeze list, size, the path the venv was built at
    entries/<key>/manifest.json inode, size, mtime and mode of every file of venv/ when it was sealed
    entries/<key>/last-used     its mtime is the LRU clock
    entries/<key>/COMPLETE      written last; an entry without it is never used
    entries/<key>/BYTECODE-COMPLETE  written when venv/ is byte-compiled (JSON: size with .pyc)
    entries/<key>/bytecode-manifest.json  the same stamps for the .pyc files the compiler wrote
    entries/<key>/VERIFIED      the exposure generation at its last full check (exposure.py)
    exposures, locks/exposed.lock  runs whose task could write the cache (exposure.py)
    notes/<key>.tampered        why the entry was discarded when a run ended, for the next run
    locks/<key>.lock            builders hold it exclusively, readers and the byte-compiler
                                shared, prune tries it
    locks/<key>.bytecode.lock   held by the one process byte-compiling the entry
    locks/<key>.use.lock        held shared by every running task whose venv came from the
                                entry (its Lease, or `hold`); prune never evicts an entry someone holds
    tmp/<key>.<random>/         a build in progress, renamed into entries/ when complete

Reuse is an overlay venv (overlay.py): the run gets a small venv of its own (pyvenv.cfg, bin/
with its path, share/ and the like linked, an empty site-packages of its own) whose one .pth
puts the entry's site-packages on sys.path after its own. Nothing is linked per package, so a
hand-over costs about the same for an empty environment and for torch. A run's venv works for
as long as its entry is held: materialize returns a `Lease` (EnvResult.lease) that keeps prune
away until it is closed, when the run has ended. Where the task's user (`owner=`) cannot reach
the cache's directories, the run gets a hard-link farm of the whole entry (linkfarm.py) instead,
checked file by file as it is linked; so does `standalone=` (`shipyard build`: a venv that
must outlive the entry, no task runs in it).

Every later task imports the entry's files, so no task may change them (issue 17, attack 4):

  * they are sealed when the entry is built: files and directories read-only for everyone
    (manifest.py); a task of another user (agent.task_user, `owner=`) cannot write them, and a
    task of the agent's own user cannot either unless it chmods first (Python writes no
    bytecode into a sealed entry);
  * the invariant: **no run is handed an entry that a task could have modified since the
    entry was last verified** (a full comparison with its manifest). A task of the agent's own
    user can reach every entry of the cache, so each such run is counted cache-wide before its
    task starts (exposure.py); an entry verified after the last such run ended, with none
    started since, is handed out without a check, any other is verified in full first. A
    run that ends verifies the entry it used (Lease.close), so the next run of the same
    environment finds it verified. Runs with `owner=` cannot write the cache and count for
    nothing. A changed entry is discarded and rebuilt, with a warning naming the file, before
    any run gets it (found when a run ends, the warning goes to the next run of that entry too);
  * a run of the agent's own user that is alive while another one is handed the entry could
    still change it under that one (as it could write through a link farm's shared inodes
    before), and a process a task left running after its run ended (outside the task's
    process group, which the agent kills) is no longer counted; only agent.task_user closes
    these, and a writer that restores size and mtime or rewrites the manifest;
  * uv hard-links its downloaded files into the venvs it builds, so an entry shares inodes with
    uv's cache: a write through a venv changes uv's copy too, and every entry that links that
    file sees the change. A tampered entry therefore also empties uv's cache
    (EnvBuilder.forget_downloads), so the rebuild downloads the file again instead of linking
    the changed one back. (Copying out of uv's cache instead cost 2-5 s per cold build and kept
    nothing safer: a task of the agent's own user can write uv's cache directly; only
    agent.task_user closes that.)

Bytecode (`compile_bytecode=`):

  "background" (default)  the entry is published right after the install, and a detached,
      niced process (sandbox/bytecode.py, its own session) compiles what has no .pyc into a
      staging tree (entries/<key>/bytecode-staging, staged_bytecode.py), then, holding the
      entry's lock exclusively for a moment, moves it into the sealed entry, stamps it
      (bytecode-manifest.json) and writes BYTECODE-COMPLETE. Runs meanwhile import from
      source (Python cannot write into the sealed entry); a compiler killed midway leaves only
      its staging tree, which the next one clears. A task of the agent's own user alive while
      the compiler works could write into its staging tree, as it could into the entry before.
  "sync"   compileall before publishing, as part of the build (cold builds take much longer);
      reusing an entry published without bytecode starts the background compiler as above.
  "off"    never compile; runs compile in memory on each import.

The mode is not part of the key: caches with different modes share entries.

Limits (`prune`): least recently used entries go first, until the cache fits a size, a number
of entries and a free-space floor; entries being built, read or held by a running task stay.
With `shared=` (a directory on NFS, sandbox/shared_cache.py) a miss looks there before
building, and what is built here is published there.

Modules (this one is the facade; each below has its own map):

    env_cache.py          EnvCache: key, materialize, ensure, the hand-over, public queries
    cache_layout.py       the paths above (CachePaths), meta/marker files, verify, disk usage
    cache_lease.py        Lease, EnvResult, CacheEntry: what materialize hands out
    cache_build.py        building or fetching an entry in tmp/, sealing it, publishing it
    cache_bytecode.py     the background byte-compiler's start and its work
    cache_housekeeping.py prune, leftovers, discarding incomplete or tampered entries
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sandbox import cache_bytecode, cache_housekeeping
from sandbox.cache_build import EntryBuilds
from sandbox.cache_layout import (
    BYTECODE_MARKER,
    LAST_USED,
    MARKER,
    VENV,
    CachePaths,
    Owner,
    checker,
    reachable,
    read_meta,
    verify,
)
from sandbox.cache_lease import CacheEntry, EnvResult, Handed, How, Lease, Once
from sandbox.exposure import Exposures
from sandbox.linkfarm import LinkStats, give_tree, link_tree
from sandbox.manifest import TamperedEntry, remove_tree
from sandbox.overlay import make_overlay
from sandbox.pyenv import EnvBuilder, Interpreter, probe, venv_python
from sandbox.requirements import RequirementSet, parse_requirements
from sandbox.shared_cache import SharedCache
from shipyard.errors import InfrastructureError
from shipyard.locks import acquire, file_lock, try_lock

__all__ = ["BYTECODE_MARKER", "BYTECODE_MODES", "KEY_VERSION", "LOCK_TIMEOUT", "MARKER", "CacheEntry", "EnvCache",
           "EnvResult", "Lease"]

Log = Callable[[str], None]

KEY_VERSION = 3
"""Bump when the entry layout or build procedure changes, so old entries stop matching."""

LOCK_TIMEOUT = 3600.0
"""Seconds to wait for another agent building the same environment."""

BYTECODE_MODES = ("background", "sync", "off")


class EnvCache:
    def __init__(
        self,
        root: Path,
        max_bytes: int | None = None,
        *,
        builder: EnvBuilder | None = None,
        lock_timeout: float = LOCK_TIMEOUT,
        compile_bytecode: str = "background",
        shared: Path | None = None,
    ) -> None:
        if compile_bytecode not in BYTECODE_MODES:
            raise ValueError(f"compile_bytecode must be one of {', '.join(BYTECODE_MODES)}, not {compile_bytecode!r}")
        self.root = Path(root).expanduser().absolute()
        self.paths = CachePaths(self.root)
        self.max_bytes = max_bytes
        self.builder = builder or EnvBuilder()
        self.lock_timeout = lock_timeout
        self.compile_bytecode = compile_bytecode
        self.shared = SharedCache(shared, stale_s=lock_timeout) if shared is not None else None
        self.exposures = Exposures(self.root, lock_timeout)
        self.builds = EntryBuilds(self.paths, self.builder, self.exposures, self.shared,
                                  sync_bytecode=compile_bytecode == "sync")

    def key(self, requirements: RequirementSet, python: Interpreter, extra: str = "") -> str:
        material = {
            "version": KEY_VERSION,
            "python": python.identity(),
            "requirements": requirements.canonical(),
            "builder": f"seed_pip={self.builder.seed_pip}",
            "extra": extra,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


    def materialize(
        self,
        requirements: RequirementSet | str | Sequence[str],
        python: Interpreter | Path | str,
        target: Path,
        extra: str = "",
        log: Log = print,
        owner: Owner | None = None,
        standalone: bool = False,
        bytecode_later: bool = False,
    ) -> EnvResult:
        """Make `target` a venv with `requirements` installed, from the cache when possible.

        `target` must not exist or be empty. `owner` (uid, gid): the user the task runs as gets
        the target's directories and private files; the cache's files stay the agent's, and a
        task of that user counts as one that cannot write them. Close the result's lease when
        the run has ended (a run without a cached entry gets one too: its task, of the agent's
        user, could write the cache). `standalone` (`shipyard build`, no task runs): a checked
        hard-link farm that outlives the cache entry, no lease. `bytecode_later`: the background
        byte-compiler is started by the result's `after_start`, not here (its fork, ~5-25 ms,
        stays off the way to the task's first line). Raises RequirementsError /
        InfrastructureError from the build.
        """
        started = time.monotonic()
        reqs = _requirement_set(requirements, log)
        interpreter = _interpreter(python)
        target = _prepare_target(Path(target))
        reason = reqs.uncacheable_reason()
        if reason:
            log(f"environment not cached: {reason}")
            frozen = self.builder.build(interpreter, reqs, target, log)
            if owner is not None:
                give_tree(target, owner)
            exposed = None if owner is not None or standalone else Lease(self, "", None, self.exposures.expose())
            return EnvResult(venv_python(target), frozen, False, "", time.monotonic() - started, exposed)
        key = self.key(reqs, interpreter, extra)
        how = How(owner, standalone)
        reused = self._reuse(key, target, log, how)
        if reused is None:
            (frozen, lease), hit = self._build_or_reuse(key, interpreter, reqs, extra, target, log, how)
        else:
            (frozen, lease), hit = reused, True
        if standalone:
            lease.release()
        compiler = Once(lambda: self._ensure_bytecode(key, log) if self.compile_bytecode != "off" else None)
        if not bytecode_later:
            compiler()
        if not hit and self.max_bytes is not None:
            self.prune(self.max_bytes, log=log, keep=(key,))
        return EnvResult(venv_python(target), frozen, hit, key, time.monotonic() - started,
                         None if standalone else lease, compiler)

    def ensure(
        self,
        requirements: RequirementSet | str | Sequence[str],
        python: Interpreter | Path | str,
        extra: str = "",
        log: Log = print,
    ) -> tuple[str, bool]:
        """Build the entry for these requirements into the cache without materializing it anywhere
        (the daemon's prepare-while-queued, agent/daemon/prepare.py); the same key, lock and build
        path as `materialize`, so a task that needs the entry later finds it or waits for it.

        Returns (key, built): built is False when the entry was already complete. Raises
        ValueError for requirements that cannot be cached, RequirementsError /
        InfrastructureError from the build.
        """
        reqs = _requirement_set(requirements, log)
        reason = reqs.uncacheable_reason()
        if reason:
            raise ValueError(f"environment not cacheable: {reason}")
        interpreter = _interpreter(python)
        key = self.key(reqs, interpreter, extra)
        if self.complete(key):
            return key, False
        with file_lock(self.paths.lock(key), timeout=self.lock_timeout):
            if read_meta(self.paths.entry(key)) is not None:   # another agent built it meanwhile
                return key, False
            cache_housekeeping.discard_partial(self.paths, key, log)
            self.builds.build_or_fetch(key, interpreter, reqs, extra, log)
        if self.compile_bytecode != "off":
            self._ensure_bytecode(key, log)
        if self.max_bytes is not None:
            self.prune(self.max_bytes, log=log, keep=(key,))
        return key, True

    def complete(self, key: str) -> bool:
        """Whether entry `key` is built and published (its last-used clock is not touched)."""
        return read_meta(self.paths.entry(key)) is not None

    def entries(self) -> list[CacheEntry]:
        """Complete entries, least recently used first."""
        return cache_housekeeping.list_entries(self.paths)

    def bytecode_complete(self, key: str) -> bool:
        return (self.paths.entry(key) / BYTECODE_MARKER).is_file()

    def wait_for_bytecode(self, key: str, timeout: float, poll: float = 0.1) -> bool:
        """Poll until the entry's bytecode is complete, at most `timeout` seconds; return whether it is."""
        deadline = time.monotonic() + timeout
        while not self.bytecode_complete(key):
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True

    def compile_entry(self, key: str) -> bool:
        """Byte-compile a published entry in this process (the background compiler runs this).

        Returns True when the entry's bytecode is complete afterwards; False when another
        process is compiling it, the entry is gone, or the compile was killed. It compiles into
        a staging tree holding the entry's lock shared (prune leaves the entry alone), then
        moves the result into the sealed entry holding it exclusively (cache_bytecode.py).
        """
        return cache_bytecode.compile_entry(self.paths, key, self.lock_timeout)

    def check_released(self, key: str) -> None:
        """After a run whose task could write the cache has ended: verify entry `key` now, so
        the next run of it is handed it without a check. Skipped (the next hand-over checks)
        while the entry is locked or another such run is alive. A changed entry is discarded,
        with a warning here and in the next run that asks for it."""
        locked = try_lock(self.paths.lock(key))
        if locked is None:
            return
        try:
            entry = self.paths.entry(key)
            if read_meta(entry) is None or self.exposures.verified_now(entry):
                return
            with self.exposures.quiet() as quiet:
                if not quiet:
                    return
                try:
                    verify(entry)
                except TamperedEntry as exc:
                    self._discard_tampered(key, exc, lambda _line: None, note=True)
                    return
                self.exposures.record(entry)
        finally:
            os.close(locked)

    def hold(self, key: str) -> contextlib.ExitStack:
        """Mark entry `key` in use until the returned stack is closed (a running task's venv)."""
        stack = contextlib.ExitStack()
        stack.enter_context(file_lock(self.paths.use_lock(key), shared=True, timeout=self.lock_timeout))
        return stack

    def prune(self, max_bytes: int | None = None, log: Log = print, keep: Sequence[str] = (), *,
              max_entries: int | None = None, min_free_bytes: int | None = None) -> list[str]:
        """Evict least-recently-used entries until the cache holds at most `max_bytes` and
        `max_entries`, and its disk has `min_free_bytes` free; return the evicted keys.

        Entries in use (locked by a builder or a reader, held by a running task) and those in
        `keep` are skipped, whatever the limits say.
        """
        limits = cache_housekeeping.Limits(max_bytes, max_entries, min_free_bytes)
        return cache_housekeeping.prune(self.paths, limits, keep, log)

    # -- reuse and build -------------------------------------------------------------------

    def _ensure_bytecode(self, key: str, log: Log) -> None:
        """Start a background compiler for the entry unless its bytecode is done or being done."""
        cache_bytecode.ensure_bytecode(self.paths, key, self.lock_timeout, log)

    def _reuse(self, key: str, target: Path, log: Log, how: How) -> Handed | None:
        with file_lock(self.paths.lock(key), shared=True, timeout=self.lock_timeout):
            try:
                return self._hand_over(key, target, log, how)
            except TamperedEntry:
                return None  # _build_or_reuse, holding the lock exclusively, reports and discards it

    def _build_or_reuse(
        self, key: str, python: Interpreter, reqs: RequirementSet, extra: str, target: Path, log: Log, how: How,
    ) -> tuple[Handed, bool]:
        """The entry built under its lock and handed over: (handed, False); or (handed, True)
        when another agent built it while this one waited for the lock (a reuse, not a build)."""
        with file_lock(self.paths.lock(key), timeout=self.lock_timeout):
            try:
                handed = self._hand_over(key, target, log, how)  # another agent built it meanwhile
            except TamperedEntry as exc:
                self._discard_tampered(key, exc, log)
                handed = None
            if handed is not None:
                return handed, True
            cache_housekeeping.report_note(self.paths, key, log)
            cache_housekeeping.discard_partial(self.paths, key, log)
            self.builds.build_or_fetch(key, python, reqs, extra, log)
            handed = self._hand_over(key, target, log, how)
        if handed is None:
            raise InfrastructureError(f"environment {key[:12]} vanished right after it was built")
        return handed, False

    def _hand_over(self, key: str, target: Path, log: Log, how: How) -> Handed | None:
        """With the key's lock held: the entry verified (unless no task could have changed it
        since its last check), held, and its venv laid at `target`; None if the entry is not
        complete; TamperedEntry if it changed."""
        entry = self.paths.entry(key)
        meta = read_meta(entry)
        if meta is None:
            return None
        (entry / LAST_USED).touch()
        farm = how.standalone or (how.owner is not None and not reachable(entry / VENV, how.owner))
        if not farm:
            self._ensure_verified(entry)
        lease = Lease(self, key, acquire(self.paths.use_lock(key), shared=True, timeout=self.lock_timeout),
                      self.exposures.expose() if how.exposed else None)
        try:
            stats = self._lay(entry, meta, target, how.owner, farm)
        except BaseException:
            lease.release()
            remove_tree(target)
            raise
        log(f"environment {key[:12]} materialized at {target}: {how.describe(farm)}, {stats.linked} files linked, "
            f"{stats.rewritten} rewritten, {stats.copied} copied")
        return list(meta["frozen"]), lease

    def _ensure_verified(self, entry: Path) -> None:
        """Verify the entry in full unless no task could have changed it since its last check
        (exposure.py); record the check when no run that could write the cache is alive."""
        if self.exposures.verified_now(entry):
            return
        with self.exposures.quiet() as quiet:
            verify(entry)
            if quiet:
                self.exposures.record(entry)

    @staticmethod
    def _lay(entry: Path, meta: dict, target: Path, owner: Owner | None, farm: bool) -> LinkStats:
        """The run's venv: an overlay, or a link farm checked file by file (a user who cannot
        reach the entry cannot import from it)."""
        if not farm:
            return make_overlay(entry / VENV, target, meta["built_at"], owner,
                                cache_tag=str(meta.get("python", "")).split(" ")[0])
        check = checker(entry)
        stats = link_tree(entry / VENV, target, meta["built_at"], str(target), check=check, owner=owner)
        check.finish()
        return stats

    def _discard_tampered(self, key: str, exc: TamperedEntry, log: Log, note: bool = False) -> None:
        """With the key's lock held: an entry changed since it was sealed goes (with `note`, the
        warning is kept for the next run that asks for it), and so do uv's downloads, which
        share its inodes (the rebuild downloads them again)."""
        cache_housekeeping.discard_tampered(self.paths, key, exc, log, note)
        self.builder.forget_downloads(log)


def _requirement_set(requirements: RequirementSet | str | Sequence[str], log: Log) -> RequirementSet:
    reqs = requirements if isinstance(requirements, RequirementSet) else parse_requirements(requirements)
    reqs, replaced = reqs.without_missing_local_files(os.path.exists)
    for line in replaced:
        log(f"'{line}' points at a file that does not exist here; installing it by name instead")
    return reqs


def _interpreter(python: Interpreter | Path | str) -> Interpreter:
    if isinstance(python, Interpreter):
        return python
    found = probe(python)
    if found is None:
        raise InfrastructureError(f"interpreter {python} does not run", kind="interpreter_missing")
    return found


def _prepare_target(target: Path) -> Path:
    target = target.expanduser().absolute()
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if target.exists():
        raise ValueError(f"environment target {target} already exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target
