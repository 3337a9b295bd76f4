"""Keeping an environment cache within its limits and free of what must not be used.

    list_entries(paths)                      complete entries, least recently used first
    prune(paths, max_bytes, max_entries, min_free_bytes, keep, log)   evict LRU entries nobody uses
    discard_partial(paths, key, log)         an entry without COMPLETE, and abandoned builds of the key
    discard_tampered(paths, key, exc, ...)   an entry changed since it was sealed (then uv's cache
                                             is emptied by the caller's forget_downloads)
    report_note(paths, key, log)             why the entry was discarded when a run ended

An entry is evicted only when nobody builds, reads (locks/<key>.lock) or holds it
(locks/<key>.use.lock); leftovers (incomplete entries, builds in tmp/) only when their key's lock
is free; removals go through trash/ (CachePaths.remove), so an interrupted one is finished later.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sandbox.cache_layout import CachePaths, bytecode_size, last_used, read_meta
from sandbox.cache_lease import CacheEntry
from sandbox.manifest import TamperedEntry, remove_tree
from shipyard.locks import try_lock

Log = Callable[[str], None]

logger = logging.getLogger("shipyard.sandbox.env_cache")


@dataclass(frozen=True)
class Limits:
    """What prune keeps the cache within (None: no limit of that kind)."""

    max_bytes: int | None = None
    max_entries: int | None = None
    min_free_bytes: int | None = None


@dataclass(frozen=True)
class _Usage:
    size: int
    count: int
    free: int

    def over(self, limits: Limits) -> bool:
        return ((limits.max_bytes is not None and self.size > limits.max_bytes)
                or (limits.max_entries is not None and self.count > limits.max_entries)
                or (limits.min_free_bytes is not None and self.free < limits.min_free_bytes))


def list_entries(paths: CachePaths) -> list[CacheEntry]:
    """Complete entries, least recently used first."""
    found = []
    for entry in paths.entries.glob("*"):
        meta = read_meta(entry)
        if meta is not None:
            size = max(int(meta.get("size", 0)), bytecode_size(entry))
            found.append(CacheEntry(entry.name, size, last_used(entry)))
    return sorted(found, key=lambda e: e.last_used)


def prune(paths: CachePaths, limits: Limits, keep: Sequence[str], log: Log) -> list[str]:
    """Evict least-recently-used entries until the cache is within `limits`; return their keys.
    Entries in use and those in `keep` stay, whatever the limits say."""
    clean_leftovers(paths, log)
    entries = list_entries(paths)
    usage = _Usage(sum(e.size for e in entries), len(entries), _free_bytes(paths))
    evicted: list[str] = []
    for entry in entries:
        if not usage.over(limits):
            break
        if entry.key in keep or not evict(paths, entry.key):
            continue
        usage = _Usage(usage.size - entry.size, usage.count - 1, usage.free + entry.size)
        evicted.append(entry.key)
        log(f"evicted environment {entry.key[:12]} ({entry.size >> 20} MiB) from the cache")
    return evicted


def evict(paths: CachePaths, key: str) -> bool:
    """Remove an entry nobody builds, reads or holds (False, and kept, otherwise)."""
    held = [try_lock(paths.lock(key)), try_lock(paths.use_lock(key))]
    try:
        if None in held:
            return False
        paths.remove(paths.entry(key))
        return True
    finally:
        for fd in held:
            if fd is not None:
                os.close(fd)


def clean_leftovers(paths: CachePaths, log: Log) -> None:
    """Incomplete entries and abandoned builds whose lock nobody holds."""
    candidates = [p for p in paths.entries.glob("*") if read_meta(p) is None]
    candidates += list(paths.tmp.glob("*.*"))
    for doomed in paths.trash.glob("*"):  # removals that were interrupted
        remove_tree(doomed)
    for path in candidates:
        key = path.name.split(".")[0]
        fd = try_lock(paths.lock(key))
        if fd is None:
            continue
        try:
            if path.exists() and (path.parent.name == "tmp" or read_meta(path) is None):
                log(f"removing leftover {path.relative_to(paths.root)}")
                paths.remove(path)
        finally:
            os.close(fd)


def discard_partial(paths: CachePaths, key: str, log: Log) -> None:
    """With the key's lock held: drop an entry without marker and any abandoned build."""
    entry = paths.entry(key)
    if entry.exists():
        log(f"discarding incomplete cache entry {key[:12]}")
        paths.remove(entry)
    for leftover in paths.tmp.glob(f"{key}.*"):
        paths.remove(leftover)


def discard_tampered(paths: CachePaths, key: str, exc: TamperedEntry, log: Log, note: bool = False) -> None:
    """With the key's lock held: an entry changed since it was sealed goes; it is rebuilt.
    With `note`, the warning is kept for the next run that asks for the entry."""
    message = (f"environment {key[:12]} in the cache was changed after it was built ({exc}); "
               "discarding it and building it again")
    logger.warning(message)
    log(f"WARNING: {message}")
    if note:
        paths.notes.mkdir(exist_ok=True)
        (paths.notes / f"{key}.tampered").write_text(message + "\n")
    paths.remove(paths.entry(key))


def report_note(paths: CachePaths, key: str, log: Log) -> None:
    """With the key's lock held, before a build: why the entry was discarded when a run ended."""
    note = paths.notes / f"{key}.tampered"
    try:
        text = note.read_text()
    except FileNotFoundError:
        return
    log(f"WARNING: {text.strip()}")
    note.unlink(missing_ok=True)


def _free_bytes(paths: CachePaths) -> int:
    try:
        return shutil.disk_usage(paths.root).free
    except OSError:
        return 0
