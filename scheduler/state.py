"""The scheduler's persisted state: one SQLite file under the state directory.

    schedules   owner -> last_planned (every fire time up to it is decided), next_at, finished
    cursors     owner -> since (changes before it are history), position (read up to here)
    fires       one row per decided firing: owner, key (planned time or event key), status,
                attempts, task id, detail, template context

A schedule's plan or a trigger's new events are written in the same transaction as the mark
that moves past them, so a restart can neither decide them again (no double fire) nor lose
them (a `pending` row is finished by the next process). WAL with synchronous=FULL: a committed
row survives SIGKILL and power loss.

Fire statuses:  pending -> fired | failed;  skipped rows are written as such (missed runs left
out by the catch-up policy, or a single-instance job still running).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from shipyard import clock
from shipyard.errors import ConfigError

__all__ = ["Cursor", "Fire", "FireStatus", "NewFire", "ScheduleMark", "StateStore"]

DB_NAME = "scheduler.db"
LOCK_NAME = "run.lock"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    owner TEXT PRIMARY KEY, last_planned REAL NOT NULL, next_at REAL, finished INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    owner TEXT PRIMARY KEY, since REAL NOT NULL, position REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS fires (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, key TEXT NOT NULL, planned REAL NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, task_id TEXT, detail TEXT NOT NULL DEFAULT '',
    context TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL, UNIQUE (owner, key));
CREATE INDEX IF NOT EXISTS ix_fires_status ON fires (status);
"""


class FireStatus(str, Enum):
    PENDING = "pending"
    FIRED = "fired"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class ScheduleMark:
    last_planned: float
    next_at: float | None
    finished: bool = False


@dataclass(frozen=True)
class Cursor:
    since: float
    position: float


@dataclass(frozen=True)
class NewFire:
    key: str
    planned: float
    status: FireStatus = FireStatus.PENDING
    detail: str = ""
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fire:
    id: int
    owner: str
    key: str
    planned: float
    status: FireStatus
    attempts: int
    task_id: str | None
    detail: str
    context: Mapping[str, str]
    created: float
    updated: float


class StateStore:
    """The state file. Not thread-safe: one loop owns it (`lock` keeps out a second process)."""

    def __init__(self, conn: sqlite3.Connection, state_dir: Path):
        self._conn = conn
        self.state_dir = state_dir

    @classmethod
    def open(cls, state_dir: Path) -> StateStore:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(state_dir / DB_NAME, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the scheduler state in {state_dir}: {exc}") from None
        conn.row_factory = sqlite3.Row
        return cls(conn, state_dir)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of this state directory by one running scheduler."""
        path = self.state_dir / LOCK_NAME
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise ConfigError(f"another scheduler (pid {handle.read().strip() or '?'}) runs on {self.state_dir}")\
                    from None
            handle.truncate(0)
            handle.write(str(os.getpid()))
            handle.flush()
            yield

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- marks -----------------------------------------------------------------------------------

    def schedule(self, owner: str) -> ScheduleMark | None:
        row = self._conn.execute("SELECT * FROM schedules WHERE owner = ?", (owner,)).fetchone()
        return ScheduleMark(row["last_planned"], row["next_at"], bool(row["finished"])) if row else None

    def cursor(self, owner: str) -> Cursor | None:
        row = self._conn.execute("SELECT * FROM cursors WHERE owner = ?", (owner,)).fetchone()
        return Cursor(row["since"], row["position"]) if row else None

    def record(self, owner: str, fires: Sequence[NewFire] = (), *, schedule: ScheduleMark | None = None,
               cursor: Cursor | None = None) -> list[NewFire]:
        """Write new fires and move the owner's mark, in one transaction. Fires whose key the
        owner already has are left out (that is the de-duplication); returns those written."""
        now = clock.now()
        written = []
        with self._tx() as conn:
            for fire in fires:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO fires (owner, key, planned, status, detail, context, created, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (owner, fire.key, fire.planned, fire.status.value, fire.detail,
                     json.dumps(dict(fire.context)), now, now))
                if cur.rowcount:
                    written.append(fire)
            if schedule is not None:
                conn.execute("INSERT OR REPLACE INTO schedules (owner, last_planned, next_at, finished, updated) "
                             "VALUES (?, ?, ?, ?, ?)",
                             (owner, schedule.last_planned, schedule.next_at, int(schedule.finished), now))
            if cursor is not None:
                conn.execute("INSERT OR REPLACE INTO cursors (owner, since, position, updated) VALUES (?, ?, ?, ?)",
                             (owner, cursor.since, cursor.position, now))
        return written

    # --- fires -----------------------------------------------------------------------------------

    def pending(self, owners: Iterable[str] | None = None) -> list[Fire]:
        rows = self._conn.execute("SELECT * FROM fires WHERE status = ? ORDER BY id", (FireStatus.PENDING.value,))
        wanted = None if owners is None else set(owners)
        return [fire for fire in map(_fire, rows) if wanted is None or fire.owner in wanted]

    def begin_attempt(self, fire_id: int) -> int:
        """Count an attempt before making it; returns how many were made before this one."""
        with self._tx() as conn:
            row = conn.execute("SELECT attempts FROM fires WHERE id = ?", (fire_id,)).fetchone()
            conn.execute("UPDATE fires SET attempts = attempts + 1, updated = ? WHERE id = ?", (clock.now(), fire_id))
        return int(row["attempts"])

    def set_task(self, fire_id: int, task_id: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE fires SET task_id = ?, updated = ? WHERE id = ?", (task_id, clock.now(), fire_id))

    def finish(self, fire_id: int, status: FireStatus, *, task_id: str | None = None, detail: str = "") -> None:
        with self._tx() as conn:
            conn.execute("UPDATE fires SET status = ?, task_id = COALESCE(?, task_id), detail = ?, updated = ? "
                         "WHERE id = ?", (status.value, task_id, detail, clock.now(), fire_id))

    def history(self, owner: str, limit: int = 20) -> list[Fire]:
        """The owner's latest fires, newest first."""
        rows = self._conn.execute("SELECT * FROM fires WHERE owner = ? ORDER BY planned DESC, id DESC LIMIT ?",
                                  (owner, limit))
        return [_fire(row) for row in rows]

    def last_fired(self, owner: str) -> Fire | None:
        row = self._conn.execute("SELECT * FROM fires WHERE owner = ? AND status IN (?, ?) ORDER BY id DESC LIMIT 1",
                                 (owner, FireStatus.FIRED.value, FireStatus.PENDING.value)).fetchone()
        return _fire(row) if row else None

    def count(self, owner: str) -> dict[str, int]:
        rows = self._conn.execute("SELECT status, COUNT(*) AS n FROM fires WHERE owner = ? GROUP BY status", (owner,))
        return {row["status"]: row["n"] for row in rows}


def _fire(row: Mapping[str, Any]) -> Fire:
    return Fire(row["id"], row["owner"], row["key"], row["planned"], FireStatus(row["status"]), row["attempts"],
                row["task_id"], row["detail"], json.loads(row["context"] or "{}"), row["created"], row["updated"])
