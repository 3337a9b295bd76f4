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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import manifest, staged_bytecode
from sandbox.exposure import Exposures
from sandbox.linkfarm import LinkStats, give_tree, link_tree
from sandbox.manifest import TamperedEntry, remove_tree
from sandbox.overlay import make_overlay
from sandbox.proc import module_env
from sandbox.pyenv import EnvBuilder, Interpreter, compile_bytecode, probe, venv_python
from sandbox.requirements import RequirementSet, parse_requirements
from sandbox.shared_cache import SharedCache
from shipyard.errors import InfrastructureError
from shipyard.locks import acquire, file_lock, try_lock

Log = Callable[[str], None]
Owner = tuple[int, int]

logger = logging.getLogger("shipyard.sandbox.env_cache")

KEY_VERSION = 3
"""Bump when the entry layout or build procedure changes, so old entries stop matching."""

LOCK_TIMEOUT = 3600.0
"""Seconds to wait for another agent building the same environment."""

MARKER, META, LAST_USED, VENV = "COMPLETE", "meta.json", "last-used", "venv"
MANIFEST, BYTECODE_MANIFEST = "manifest.json", "bytecode-manifest.json"
BYTECODE_MARKER, STAGING = "BYTECODE-COMPLETE", "bytecode-staging"
BYTECODE_MODES = ("background", "sync", "off")

_DETACH = '"$@" </dev/null >/dev/null 2>&1 &'
"""sh runs the compiler in the background and exits at once; the compiler is reparented."""


def start_compiler(root: Path, key: str, lock_timeout: float) -> None:
    """Start a detached compiler for entry `key` of the cache at `root`; do not wait for it."""
    command = [sys.executable, "-m", "sandbox.bytecode", str(root), key, str(lock_timeout)]
    subprocess.run(
        ["/bin/sh", "-c", _DETACH, "sh", *command],
        env=module_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, check=False, timeout=60,
    )


class Lease:
    """A run's hold on the entry its venv is layered over (EnvCache.materialize returns it).

    Until `close()` prune leaves the entry alone. For a run whose task could write the cache
    (no `owner=`), it also keeps the run counted as exposed (exposure.py), and `close()`, once
    the task has ended, verifies the entry so the next run of it needs no check.
    """

    def __init__(self, cache: EnvCache, key: str, use_fd: int | None, exposed_fd: int | None):
        self.cache, self.key = cache, key
        self._fds = [fd for fd in (exposed_fd, use_fd) if fd is not None]
        self.exposed = exposed_fd is not None

    def close(self) -> None:
        """The run has ended: release the entry (verifying it first when the task could write it)."""
        if not self._fds:
            return
        if self.exposed:
            os.close(self._fds.pop(0))
            if self.key:
                self.cache.check_released(self.key)
        self.release()

    def release(self) -> None:
        """Release without verifying (the run never started)."""
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.release()


@dataclass(frozen=True)
class EnvResult:
    python: Path
    """The interpreter of the materialized environment (inside the target directory)."""
    frozen: list[str] = field(hash=False)
    cache_hit: bool
    key: str
    """Empty when the requirements could not be cached (editable, -r, local paths...)."""
    seconds: float
    lease: Lease | None = field(default=None, compare=False, hash=False, repr=False)
    """Holds the entry for the run (None when not cached): close it when the run has ended."""
    after_start: Callable[[], None] = field(default=lambda: None, compare=False, hash=False, repr=False)
    """With `materialize(bytecode_later=True)`: starts the entry's background byte-compiler if
    it needs one; call it once the task is spawned (a second call does nothing)."""


@dataclass(frozen=True)
class CacheEntry:
    key: str
    size: int
    last_used: float


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
        self.max_bytes = max_bytes
        self.builder = builder or EnvBuilder()
        self.lock_timeout = lock_timeout
        self.compile_bytecode = compile_bytecode
        self.shared = SharedCache(shared, stale_s=lock_timeout) if shared is not None else None
        self.exposures = Exposures(self.root, lock_timeout)

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
        how = _How(owner, standalone)
        reused = self._reuse(key, target, log, how)
        if reused is None:
            (frozen, lease), hit = self._build_or_reuse(key, interpreter, reqs, extra, target, log, how), False
        else:
            (frozen, lease), hit = reused, True
        if standalone:
            lease.release()
        compiler = _Once(lambda: self._ensure_bytecode(key, log) if self.compile_bytecode != "off" else None)
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
        with file_lock(self._lock_path(key), timeout=self.lock_timeout):
            if _read_meta(self._entries_dir() / key) is not None:   # another agent built it meanwhile
                return key, False
            self._discard_partial(key, log)
            self._build_or_fetch(key, interpreter, reqs, extra, log)
        if self.compile_bytecode != "off":
            self._ensure_bytecode(key, log)
        if self.max_bytes is not None:
            self.prune(self.max_bytes, log=log, keep=(key,))
        return key, True

    def complete(self, key: str) -> bool:
        """Whether entry `key` is built and published (its last-used clock is not touched)."""
        return _read_meta(self._entries_dir() / key) is not None

    def entries(self) -> list[CacheEntry]:
        """Complete entries, least recently used first."""
        found = []
        for entry in self._entries_dir().glob("*"):
            meta = _read_meta(entry)
            if meta is not None:
                size = max(int(meta.get("size", 0)), _bytecode_size(entry))
                found.append(CacheEntry(entry.name, size, _last_used(entry)))
        return sorted(found, key=lambda e: e.last_used)

    def bytecode_complete(self, key: str) -> bool:
        return (self._entries_dir() / key / BYTECODE_MARKER).is_file()

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
        moves the result into the sealed entry holding it exclusively (staged_bytecode.py).
        """
        compiling = try_lock(self._bytecode_lock_path(key))
        if compiling is None:
            return False
        try:
            entry = self._entries_dir() / key
            with file_lock(self._lock_path(key), shared=True, timeout=self.lock_timeout):
                if _read_meta(entry) is None:
                    return False
                if (entry / BYTECODE_MARKER).is_file():
                    return True
                remove_tree(entry / STAGING)  # left by a compiler that was killed
                if not _compile_staged(entry):
                    return False
            with file_lock(self._lock_path(key), timeout=self.lock_timeout):
                return _install_staged(entry)
        finally:
            os.close(compiling)

    def check_released(self, key: str) -> None:
        """After a run whose task could write the cache has ended: verify entry `key` now, so
        the next run of it is handed it without a check. Skipped (the next hand-over checks)
        while the entry is locked or another such run is alive. A changed entry is discarded,
        with a warning here and in the next run that asks for it."""
        locked = try_lock(self._lock_path(key))
        if locked is None:
            return
        try:
            entry = self._entries_dir() / key
            if _read_meta(entry) is None or self.exposures.verified_now(entry):
                return
            with self.exposures.quiet() as quiet:
                if not quiet:
                    return
                try:
                    _verify(entry)
                except TamperedEntry as exc:
                    self._discard_tampered(key, exc, lambda _line: None, note=True)
                    return
                self.exposures.record(entry)
        finally:
            os.close(locked)

    def hold(self, key: str) -> contextlib.ExitStack:
        """Mark entry `key` in use until the returned stack is closed (a running task's venv)."""
        stack = contextlib.ExitStack()
        stack.enter_context(file_lock(self._use_lock_path(key), shared=True, timeout=self.lock_timeout))
        return stack

    def prune(self, max_bytes: int | None = None, log: Log = print, keep: Sequence[str] = (), *,
              max_entries: int | None = None, min_free_bytes: int | None = None) -> list[str]:
        """Evict least-recently-used entries until the cache holds at most `max_bytes` and
        `max_entries`, and its disk has `min_free_bytes` free; return the evicted keys.

        Entries in use (locked by a builder or a reader, held by a running task) and those in
        `keep` are skipped, whatever the limits say.
        """
        self._clean_leftovers(log)
        entries = self.entries()
        usage = _Usage(sum(e.size for e in entries), len(entries), _free_bytes(self.root))
        evicted: list[str] = []
        for entry in entries:
            if not usage.over(max_bytes, max_entries, min_free_bytes):
                break
            if entry.key in keep or not self._evict(entry.key):
                continue
            usage = _Usage(usage.size - entry.size, usage.count - 1, usage.free + entry.size)
            evicted.append(entry.key)
            log(f"evicted environment {entry.key[:12]} ({entry.size >> 20} MiB) from the cache")
        return evicted

    # -- reuse and build -------------------------------------------------------------------

    def _ensure_bytecode(self, key: str, log: Log) -> None:
        """Start a background compiler for the entry unless its bytecode is done or being done."""
        if self.bytecode_complete(key):
            return
        compiling = try_lock(self._bytecode_lock_path(key))
        if compiling is None:
            log(f"bytecode of environment {key[:12]} is being compiled in the background")
            return
        os.close(compiling)  # the compiler takes it (one racing us finds it busy and exits)
        if not (self._entries_dir() / key).is_dir():
            return
        log(f"compiling bytecode of environment {key[:12]} in the background")
        try:
            start_compiler(self.root, key, self.lock_timeout)
        except (OSError, subprocess.SubprocessError) as exc:  # only costs the targets' first imports
            log(f"could not start the bytecode compiler of environment {key[:12]}: {exc}")

    def _reuse(self, key: str, target: Path, log: Log, how: _How) -> _Handed | None:
        with file_lock(self._lock_path(key), shared=True, timeout=self.lock_timeout):
            try:
                return self._hand_over(key, target, log, how)
            except TamperedEntry:
                return None  # _build_or_reuse, holding the lock exclusively, reports and discards it

    def _build_or_reuse(
        self, key: str, python: Interpreter, reqs: RequirementSet, extra: str, target: Path, log: Log, how: _How,
    ) -> _Handed:
        with file_lock(self._lock_path(key), timeout=self.lock_timeout):
            try:
                handed = self._hand_over(key, target, log, how)  # another agent built it meanwhile
            except TamperedEntry as exc:
                self._discard_tampered(key, exc, log)
                handed = None
            if handed is not None:
                return handed
            self._report_note(key, log)
            self._discard_partial(key, log)
            self._build_or_fetch(key, python, reqs, extra, log)
            handed = self._hand_over(key, target, log, how)
        if handed is None:
            raise InfrastructureError(f"environment {key[:12]} vanished right after it was built")
        return handed

    def _hand_over(self, key: str, target: Path, log: Log, how: _How) -> _Handed | None:
        """With the key's lock held: the entry verified (unless no task could have changed it
        since its last check), held, and its venv laid at `target`; None if the entry is not
        complete; TamperedEntry if it changed."""
        entry = self._entries_dir() / key
        meta = _read_meta(entry)
        if meta is None:
            return None
        (entry / LAST_USED).touch()
        farm = how.standalone or (how.owner is not None and not _reachable(entry / VENV, how.owner))
        if not farm:
            self._ensure_verified(entry)
        lease = Lease(self, key, acquire(self._use_lock_path(key), shared=True, timeout=self.lock_timeout),
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
            _verify(entry)
            if quiet:
                self.exposures.record(entry)

    @staticmethod
    def _lay(entry: Path, meta: dict, target: Path, owner: Owner | None, farm: bool) -> LinkStats:
        """The run's venv: an overlay, or a link farm checked file by file (a user who cannot
        reach the entry cannot import from it)."""
        if not farm:
            return make_overlay(entry / VENV, target, meta["built_at"], owner,
                                cache_tag=str(meta.get("python", "")).split(" ")[0])
        check = _checker(entry)
        stats = link_tree(entry / VENV, target, meta["built_at"], str(target), check=check, owner=owner)
        check.finish()
        return stats

    def _build_or_fetch(self, key: str, python: Interpreter, reqs: RequirementSet, extra: str, log: Log) -> None:
        """With the key's local lock held: the shared cache's copy when there is one, else a build
        (published to the shared cache when there is one)."""
        if self.shared is None:
            log(f"building environment {key[:12]} (Python {python.version}, {len(reqs.requirements)} lines)")
            self._build_entry(key, python, reqs, extra, log)
            return
        with self.shared.building(key, log) as ready:
            if ready and self._fetch_shared(key, log):
                return
            log(f"building environment {key[:12]} (Python {python.version}, {len(reqs.requirements)} lines)")
            self._build_entry(key, python, reqs, extra, log)
            self.shared.publish(key, self._entries_dir() / key, log)

    def _fetch_shared(self, key: str, log: Log) -> bool:
        """Copy the shared cache's entry into this cache, sealed and stamped here."""
        assert self.shared is not None
        for layout in (self.root, self.root / "tmp", self._entries_dir()):
            _layout_dir(layout)
        build_dir = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.root / "tmp"))
        try:
            if not self.shared.copy_into(key, build_dir) or _read_meta(build_dir) is None:
                remove_tree(build_dir)
                return False
            manifest.save(build_dir / MANIFEST, manifest.seal(build_dir / VENV))
            (build_dir / LAST_USED).touch()
            self._publish(build_dir, key)
        except BaseException:
            remove_tree(build_dir)
            raise
        log(f"environment {key[:12]} copied from the shared cache {self.shared.root}")
        return True

    def _build_entry(self, key: str, python: Interpreter, reqs: RequirementSet, extra: str, log: Log) -> None:
        tmp_root = self.root / "tmp"
        for layout in (self.root, tmp_root, self._entries_dir()):
            _layout_dir(layout)
        build_dir = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=tmp_root))
        try:
            venv = build_dir / VENV
            frozen = self.builder.build(python, reqs, venv, log)
            compiled = self.compile_bytecode == "sync" and compile_bytecode(venv_python(venv), venv)
            stamps = manifest.seal(venv)   # one walk: sealed, stamped, and sized from the stamps
            manifest.save(build_dir / MANIFEST, stamps)
            size = manifest.tree_size(stamps) + (build_dir / MANIFEST).stat().st_size
            if compiled:
                _write_marker(build_dir / BYTECODE_MARKER, {"size": size})
            meta = {
                "key": key, "python": python.identity(), "requirements": reqs.canonical(),
                "extra": extra, "frozen": frozen, "built_at": str(venv),
                "created": time.time(), "size": size,
            }
            (build_dir / META).write_text(json.dumps(meta, indent=1))
            (build_dir / LAST_USED).touch()
            _write_marker(build_dir / MARKER)
            self._publish(build_dir, key)
        except BaseException:
            remove_tree(build_dir)
            raise

    def _publish(self, build_dir: Path, key: str) -> None:
        """Rename a sealed build into entries/; readable by a task's user (runs import from it);
        verified as of now when no run that could write the cache is alive."""
        os.chmod(build_dir, 0o755)
        with self.exposures.quiet() as quiet:
            if quiet:
                self.exposures.record(build_dir)
        os.rename(build_dir, self._entries_dir() / key)

    # -- housekeeping ----------------------------------------------------------------------

    def _discard_tampered(self, key: str, exc: TamperedEntry, log: Log, note: bool = False) -> None:
        """With the key's lock held: an entry changed since it was sealed goes; it is rebuilt.
        With `note`, the warning is kept for the next run that asks for the entry."""
        message = (f"environment {key[:12]} in the cache was changed after it was built ({exc}); "
                   "discarding it and building it again")
        logger.warning(message)
        log(f"WARNING: {message}")
        if note:
            (self.root / "notes").mkdir(exist_ok=True)
            (self.root / "notes" / f"{key}.tampered").write_text(message + "\n")
        self._remove(self._entries_dir() / key)
        self.builder.forget_downloads(log)

    def _report_note(self, key: str, log: Log) -> None:
        """With the key's lock held, before a build: why the entry was discarded when a run ended."""
        note = self.root / "notes" / f"{key}.tampered"
        with contextlib.suppress(FileNotFoundError):
            log(f"WARNING: {note.read_text().strip()}")
            note.unlink()

    def _discard_partial(self, key: str, log: Log) -> None:
        """With the key's lock held: drop an entry without marker and any abandoned build."""
        entry = self._entries_dir() / key
        if entry.exists():
            log(f"discarding incomplete cache entry {key[:12]}")
            self._remove(entry)
        for leftover in (self.root / "tmp").glob(f"{key}.*"):
            self._remove(leftover)

    def _clean_leftovers(self, log: Log) -> None:
        """Incomplete entries and abandoned builds whose lock nobody holds."""
        candidates = [p for p in self._entries_dir().glob("*") if _read_meta(p) is None]
        candidates += list((self.root / "tmp").glob("*.*"))
        for doomed in (self.root / "trash").glob("*"):  # removals that were interrupted
            remove_tree(doomed)
        for path in candidates:
            key = path.name.split(".")[0]
            fd = try_lock(self._lock_path(key))
            if fd is None:
                continue
            try:
                if path.exists() and (path.parent.name == "tmp" or _read_meta(path) is None):
                    log(f"removing leftover {path.relative_to(self.root)}")
                    self._remove(path)
            finally:
                os.close(fd)

    def _evict(self, key: str) -> bool:
        """Remove an entry nobody builds, reads or holds (False, and kept, otherwise)."""
        held = [try_lock(self._lock_path(key)), try_lock(self._use_lock_path(key))]
        try:
            if None in held:
                return False
            self._remove(self._entries_dir() / key)
            return True
        finally:
            for fd in held:
                if fd is not None:
                    os.close(fd)

    def _remove(self, path: Path) -> None:
        """Move out of sight first (atomic), then delete at leisure."""
        trash = self.root / "trash"
        trash.mkdir(parents=True, exist_ok=True)
        doomed = Path(tempfile.mkdtemp(dir=trash)) / path.name
        os.rename(path, doomed)
        remove_tree(doomed.parent)

    def _entries_dir(self) -> Path:
        return self.root / "entries"

    def _lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def _bytecode_lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.bytecode.lock"

    def _use_lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.use.lock"


class _Once:
    """`fn` on the first call, nothing on later ones."""

    def __init__(self, fn: Callable[[], object]):
        self._fn: Callable[[], object] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


_Handed = tuple[list[str], Lease]
"""A hand-over: the entry's freeze list, and the run's lease on it."""


@dataclass(frozen=True)
class _How:
    """How a venv is handed over: to whom (`owner`), and whether it must outlive the entry."""

    owner: Owner | None
    standalone: bool

    @property
    def exposed(self) -> bool:
        """A task of the agent's own user will run with it (counted: exposure.py)."""
        return self.owner is None and not self.standalone

    def describe(self, farm: bool) -> str:
        if not farm:
            return "layered over the entry"
        return "linked (standalone)" if self.standalone else "linked (the task's user cannot reach the cache)"


@dataclass(frozen=True)
class _Usage:
    size: int
    count: int
    free: int

    def over(self, max_bytes: int | None, max_entries: int | None, min_free_bytes: int | None) -> bool:
        return ((max_bytes is not None and self.size > max_bytes)
                or (max_entries is not None and self.count > max_entries)
                or (min_free_bytes is not None and self.free < min_free_bytes))


def _free_bytes(root: Path) -> int:
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return 0


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


def _read_meta(entry: Path) -> dict | None:
    if not (entry / MARKER).is_file():
        return None
    try:
        meta = json.loads((entry / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "built_at" in meta and "frozen" in meta else None


def _checker(entry: Path) -> manifest.Checker:
    """The entry's manifests as a Checker; an entry without a readable manifest counts as tampered."""
    stamps = manifest.load(entry / MANIFEST)
    if stamps is None:
        raise TamperedEntry(MANIFEST, "missing or unreadable")
    return manifest.Checker(stamps, _bytecode_stamps(entry))


def _layout_dir(path: Path) -> None:
    """Create a directory of the cache's layout; writable by its owner only, whatever the umask."""
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o022:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o022)


def _last_used(entry: Path) -> float:
    try:
        return (entry / LAST_USED).stat().st_mtime
    except OSError:
        return 0.0


def _bytecode_size(entry: Path) -> int:
    try:
        return int(json.loads((entry / BYTECODE_MARKER).read_text()).get("size", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def _write_marker(path: Path, content: dict | None = None) -> None:
    """Write `path` completely (temporary name, fsync, rename): a reader never sees it half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as marker:
        marker.write(json.dumps(content) if content is not None else f"{time.time()}")
        marker.write("\n")
        marker.flush()
        os.fsync(marker.fileno())
    os.replace(tmp, path)


def _compile_staged(entry: Path) -> bool:
    """Compile what the entry's venv lacks into its staging tree, with the entry's interpreter."""
    command = [str(venv_python(entry / VENV)), "-I", "-S", staged_bytecode.__file__, str(entry / VENV),
               str(entry / STAGING)]
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                              timeout=LOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def _install_staged(entry: Path) -> bool:
    """With the key's lock held exclusively: the staged bytecode into the entry, stamped."""
    if _read_meta(entry) is None or (entry / BYTECODE_MARKER).is_file():
        remove_tree(entry / STAGING)
        return _read_meta(entry) is not None
    try:
        staged_bytecode.install_staged(str(entry / STAGING), str(entry / VENV))
    finally:
        remove_tree(entry / STAGING)
    manifest.save(entry / BYTECODE_MANIFEST, manifest.seal(entry / VENV, only_bytecode=True))
    _write_marker(entry / BYTECODE_MARKER, {"size": _disk_usage(entry)})
    return True


def _verify(entry: Path) -> None:
    """The entry's venv against its manifests (TamperedEntry naming the first difference)."""
    manifest.verify(entry / VENV, manifest.load(entry / MANIFEST), _bytecode_stamps(entry))


def _bytecode_stamps(entry: Path) -> manifest.Stamps | None:
    return manifest.load(entry / BYTECODE_MANIFEST) if (entry / BYTECODE_MARKER).is_file() else None


def _reachable(path: Path, owner: Owner) -> bool:
    """Whether user `owner` (no supplementary groups, as tasks run) may traverse to `path`."""
    uid, gid = owner
    for ancestor in (path, *path.parents):
        st = ancestor.stat()
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _disk_usage(root: Path) -> int:
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
