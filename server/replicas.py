"""Replicas on one PostgreSQL: wake-ups across replicas, and one leader for periodic jobs.

    Coordinator        one thread per replica with a PostgreSQL connection of its own (autocommit):
                         LISTEN shipyard_queue  -> Notifier.notify(queue id) on this replica's loop
                         LISTEN shipyard_keys   -> on_key(access key): its cached check is dropped
                         pg_try_advisory_lock   every leader_check_s until held -> `is_leader`
                       The connection dropping (a database restart) loses all three: meanwhile
                       waiters re-check every second and key checks last seconds, the thread
                       reconnects with backoff, drops every cached key check and wakes every
                       waiter (notifications may have been missed) and competes for the lock again.
    publish(conn, q)   in the enqueueing transaction: pg_notify, which PostgreSQL delivers at commit,
                       so a replica woken by it always sees the entry.
    publish_key(conn, k) in a transaction that revokes a key or moves its expiry: every replica
                       drops its cached answer for that key when it commits (server/state.py).
    reaper_fence(conn) in a reaper transaction: pg_try_advisory_xact_lock, so two replicas that both
                       believe they lead (for a moment after a connection loss) never reap at once.

A replica killed with -9 leaves a closed socket: PostgreSQL ends its session and frees the lock,
and another replica takes it at its next try (within leader_check_s). Keepalives on the
connection find a vanished peer (a network cut) within about half a minute.

SQLite has no coordinator: one process, woken in memory (server/notify.py).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import make_url

from server.notify import Notifier
from server.storage.prepared import Prepared

log = logging.getLogger("shipyard.server.replicas")

CHANNEL = "shipyard_queue"
KEYS_CHANNEL = "shipyard_keys"
LEADER_KEY = 0x5348_0002   # session advisory lock: held by the leader's coordinator connection
REAPER_KEY = 0x5348_0003   # transaction advisory lock: held by a reaper pass while it runs
_NOTIFY = Prepared(select(func.pg_notify(CHANNEL, bindparam("queue_id"))))  # sent on in a pipeline
_NOTIFY_KEY = Prepared(select(func.pg_notify(KEYS_CHANNEL, bindparam("access_key"))))
_FENCE = select(func.pg_try_advisory_xact_lock(REAPER_KEY))


def is_postgres(conn: Any) -> bool:
    return bool(conn.dialect.name == "postgresql")


def publish(conn: Any, queue_id: str) -> None:
    """Tell every replica's waiters on `queue_id` (PostgreSQL; sent when `conn` commits)."""
    if is_postgres(conn):
        conn.execute(_NOTIFY, {"queue_id": queue_id})


def publish_key(conn: Any, access_key: str) -> None:
    """Tell every replica that `access_key` changed (revoked, expiry moved; PostgreSQL; at commit)."""
    if is_postgres(conn):
        conn.execute(_NOTIFY_KEY, {"access_key": access_key})


def reaper_fence(conn: Any) -> bool:
    """May this transaction run a reaper pass? Always on SQLite; on PostgreSQL only one at a time."""
    return not is_postgres(conn) or bool(conn.execute(_FENCE).scalar())


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq takes it (no +driver)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Coordinator:
    def __init__(self, url: str, notifier: Notifier, *, name: str, leader_check_s: float = 1.0,
                 on_key: Callable[[str], None] | None = None, on_reconnect: Callable[[], None] | None = None):
        self.dsn = libpq_url(url)
        self.notifier = notifier
        self.on_key = on_key  # a key changed on some replica (called on this thread)
        self.on_reconnect = on_reconnect  # listening again: what was heard before may be stale
        self.name = name
        self.leader_check_s = leader_check_s
        self.is_leader = False
        self.connected = False
        self.leader_changes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shipyard-coordinator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; the leader lock goes with the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.leader_check_s + 3.0)

    def _run(self) -> None:
        import psycopg

        backoff = 0.25
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5, keepalives=1,
                                     keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                                     application_name=f"shipyard-coordinator {self.name}"[:63]) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {KEYS_CHANNEL}")
                    self._up()
                    backoff = 0.25
                    self._serve(conn)
            except psycopg.Error as exc:
                if self.connected:
                    log.warning("replica %s lost its coordination connection (%s); reconnecting",
                                self.name, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            finally:
                self._down()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _serve(self, conn: Any) -> None:
        while not self._stop.is_set():
            for note in conn.notifies(timeout=self.leader_check_s):
                if note.channel == KEYS_CHANNEL:
                    if self.on_key is not None:
                        self.on_key(note.payload)
                else:
                    self.notifier.notify(note.payload)
                if self._stop.is_set():
                    return
            if self.is_leader:
                conn.execute("SELECT 1")  # a dead connection shows here, and leadership ends with it
                continue
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_KEY,)).fetchone()
            if row and row[0]:
                self.is_leader = True
                self.leader_changes += 1
                log.info("replica %s is now the leader (lease reaper)", self.name)

    def _up(self) -> None:
        if self.on_reconnect is not None:
            self.on_reconnect()  # before `connected`: no cached key check outlives a gap in listening
        self.connected = True
        self.notifier.set_listening(True)
        self.notifier.wake_all()  # notifications sent while we were not listening are lost: re-check

    def _down(self) -> None:
        if self.is_leader:
            log.warning("replica %s is no longer the leader", self.name)
        self.connected = False
        self.is_leader = False
        self.notifier.set_listening(False)

