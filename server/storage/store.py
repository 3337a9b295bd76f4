"""The storage layer: one `Store` over SQLAlchemy Core for SQLite (default) and PostgreSQL.

Documents are stored whole in a JSON column; the columns that queries need are derived from
the document by `columns_for` on every write, so they can never drift apart. The schema itself
is Alembic's (server/storage/schema.py, migrations/): a Store only checks its revision on open.

    new_id, columns_for              a document's id; the columns derived from it
    sqlite_url, sqlite_pragmas,      where and how the database is opened
      PoolSettings
    WriteConflict, conflicted,       a transaction that lost to another; its call run again
      retrying
    database_unavailable             PostgreSQL out of reach (or no pooled connection free)
    Store                            transactions (`tx`), documents (get/save/insert/delete),
                                     their task_metrics rows, key/value meta
    Tx (server/storage/tx.py)        one transaction, and the driver calls under SQLAlchemy
    metric_rows                      a task's task_metrics rows (server/storage/task_metrics.py)
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from sqlalchemy import Table, bindparam, create_engine, delete, event, insert, literal_column, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from server.rpc import jsonutil
from server.storage import liveness, schema
from server.storage import tables as t
from server.storage.group import GroupCommits
from server.storage.prepared import Prepared
from server.storage.task_metrics import _CLEAR_METRICS, _INSERT_METRIC, _UPSERT_METRIC, _changed_rows, metric_rows
from server.storage.tx import Tx, _driver_call, _driver_connection, _driver_errors, _leave_autocommit
from shipyard import clock
from shipyard.protocol import SystemTag, TaskStatus, TaskType

T = TypeVar("T")
_VERSION: Any = literal_column("xmin::text")  # PostgreSQL's row version: changes with every update of the row
_XMIN = _VERSION.label("version")


def new_id() -> str:
    return uuid.uuid4().hex


def _ts(doc: dict, key: str, default: Any) -> Any:
    value = doc.get(key)
    if isinstance(value, str) and value:
        try:
            return clock.parse_iso(value)
        except ValueError:
            return default
    return default


def columns_for(table: Table, doc: dict) -> dict[str, Any]:
    now = clock.now()
    if table is t.tasks:
        return {
            "name": doc.get("name") or "", "project": doc.get("project"),
            "status": doc.get("status") or TaskStatus.CREATED, "type": doc.get("type") or TaskType.TRAINING,

            "parent": doc.get("parent"), "created": _ts(doc, "created", now),
            "last_update": _ts(doc, "last_update", now), "last_change": _ts(doc, "last_change", now),
            "lease_expires": (doc.get("_lease") or {}).get("expires"),
            "archived": SystemTag.ARCHIVED in (doc.get("system_tags") or ()),
            "started": _ts(doc, "started", None), "completed": _ts(doc, "completed", None),
        }
    if table is t.projects:
        return {"name": doc.get("name") or "", "created": _ts(doc, "created", now),
                "last_update": _ts(doc, "last_update", now)}
    if table is t.queues:
        return {"name": doc.get("name") or "", "created": _ts(doc, "created", now)}
    if table is t.models:
        return {"name": doc.get("name") or "", "project": doc.get("project"), "task": doc.get("task"),
                "created": _ts(doc, "created", now), "last_update": _ts(doc, "last_update", now)}
    if table is t.workers:
        return {"last_activity": _ts(doc, "last_activity_time", now)}
    raise ValueError(f"not a document table: {table.name}")


@functools.cache
def _derived(table: Table) -> tuple[str, ...]:
    """The columns `columns_for` derives from the document, in the table's order."""
    return tuple(c.name for c in table.columns if c.name not in ("id", "doc"))


_BEGIN = Prepared(text("BEGIN"))
_COMMIT = Prepared(text("COMMIT"))
_IDLE = 0  # libpq's PQTRANS_IDLE: no transaction open on the connection


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'shipyard.db'}"


@dataclass(frozen=True)
class PoolSettings:
    """PostgreSQL connection pool and statement limit (server config db_*; SQLite ignores them)."""
    size: int = 16
    max_overflow: int = 32
    timeout_s: float = 10.0
    statement_timeout_s: float = 30.0


def sqlite_pragmas(synchronous: str) -> tuple[str, ...]:
    """The pragmas every SQLite connection of the server runs (bench/bench_server.py's commit
    floor runs the same). WAL: readers never block the writer; a committed transaction survives
    SIGKILL (and, with synchronous=FULL, power loss)."""
    return ("PRAGMA journal_mode=WAL", f"PRAGMA synchronous={synchronous}", "PRAGMA foreign_keys=ON",
            "PRAGMA busy_timeout=30000")


def _make_engine(url: str, synchronous: str, pool: PoolSettings) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=8, max_overflow=32, json_serializer=jsonutil.dumps,
                               json_deserializer=jsonutil.loads)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in sqlite_pragmas(synchronous):
                cur.execute(pragma)
            cur.close()

        # Take the write lock at BEGIN so read-then-write transactions never deadlock. A
        # `Tx` has already begun on the raw connection when SQLAlchemy autobegins inside it.
        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            if not _driver_connection(conn).in_transaction:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        _disable_pysqlite_autobegin(engine)
        return engine
    url = url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    connect_args: dict[str, Any] = {"connect_timeout": 5}
    if pool.statement_timeout_s > 0:
        connect_args["options"] = f"-c statement_timeout={int(pool.statement_timeout_s * 1000)}"
    # a connection that died with a database restart is replaced at checkout, not used; pinged
    # only when its socket or idle time says it may be dead (storage/liveness.py)
    engine = create_engine(url, pool_size=pool.size, max_overflow=pool.max_overflow, pool_timeout=pool.timeout_s,
                           pool_pre_ping=False, connect_args=connect_args,
                           json_serializer=jsonutil.dumps, json_deserializer=jsonutil.loads)
    liveness.watch(engine)
    return engine


def _disable_pysqlite_autobegin(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None


_UNAVAILABLE_STATES = ("08", "57P")  # connection exceptions; admin/crash shutdown, cannot connect now


def database_unavailable(exc: BaseException) -> bool:
    """Did `exc` come from PostgreSQL being unreachable (restarting, down, no free connection),
    where the statement did not run and a retry later can succeed?"""
    if isinstance(exc, SATimeoutError):  # no pooled connection free within db_pool_timeout_s
        return True
    if not isinstance(exc, DBAPIError) or not type(exc.orig).__module__.startswith("psycopg"):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    return isinstance(exc, OperationalError) and (state is None or state.startswith(_UNAVAILABLE_STATES))


class WriteConflict(Exception):
    """A document changed in another transaction between this one's read and its write (two
    replicas, or two handler threads, on PostgreSQL). The transaction is rolled back; the caller
    runs the whole call again (server/rpc/api.py), which reads the new version."""


_RETRY_STATES = ("40P01", "40001")  # PostgreSQL: deadlock detected, serialization failure


def conflicted(exc: BaseException) -> bool:
    """Did the transaction end in a conflict that rolled it back whole, so running the call
    again is safe: a WriteConflict, or PostgreSQL choosing it as a deadlock's victim (two
    transactions updating the same rows, e.g. a queue's metrics sample, in different orders)?"""
    if isinstance(exc, WriteConflict):
        return True
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRY_STATES


def retrying(fn: Callable[..., T], *args: Any, attempts: int = 5) -> T:
    """`fn(*args)`, run again while it ends in a conflict (each run is its own transaction)."""
    for _ in range(attempts - 1):
        try:
            return fn(*args)
        except (WriteConflict, DBAPIError) as exc:
            if not conflicted(exc):
                raise
    return fn(*args)


class Store:
    def __init__(self, url: str, *, synchronous: str = "NORMAL", upgrade: bool = False,
                 pool: PoolSettings | None = None):
        """Open the database at `url`, after bringing its schema to this code's revision
        (server/storage/schema.py: created when fresh; upgraded only with `upgrade`)."""
        schema.prepare(url, upgrade=upgrade)
        self.url = url
        self.engine = _make_engine(url, synchronous, pool or PoolSettings())
        self.is_sqlite = url.startswith("sqlite")
        self._statements: dict[tuple, Any] = {}
        # SQLite: each thread keeps one connection (a file handle; nothing to go stale), so a
        # transaction costs a BEGIN and a COMMIT rather than a pool checkout and its events.
        self._local = threading.local()
        self._held: list[Connection] = []
        self._held_lock = threading.Lock()
        # SQLite has one writer at a time. Every transaction holds this gate, so the event loop can
        # tell without waiting whether a pool thread is inside one (`gate.acquire(blocking=False)`)
        # and run a call on the pool instead of blocking on the database lock (server/api.py).
        self.gate: threading.RLock | None = threading.RLock() if self.is_sqlite else None
        self.groups: GroupCommits | None = None  # SQLite on a server's loop: group commit (group.py)

    def group_commits(self, loop: asyncio.AbstractEventLoop) -> None:
        """SQLite: from now on, transactions of calls that opted in on this thread (the event
        loop's) share one COMMIT per loop pass (server/storage/group.py)."""
        if self.gate is not None:
            self.groups = GroupCommits(self, loop, Tx, _driver_call, _driver_connection)

    def stop_grouping(self) -> None:
        """Commit the open group, if any, and run every transaction alone again."""
        groups, self.groups = self.groups, None
        if groups is not None:
            groups.commit_now()

    def close(self) -> None:
        self.stop_grouping()
        with self._held_lock:
            held, self._held = self._held, []
        for conn in held:
            conn.close()
        self.engine.dispose()

    def _thread_connection(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._local.conn = self.engine.connect()
            with self._held_lock:
                self._held.append(conn)
        return conn

    def _begin_immediate(self, gate: threading.RLock) -> Connection:
        """SQLite: this thread's connection, in a transaction holding the write lock and `gate`."""
        gate.acquire()
        try:
            sa = self._thread_connection()
            if _driver_connection(sa).in_transaction or sa.in_transaction():
                raise RuntimeError("Store.tx() nested in another transaction of the same thread")
            _driver_call(sa.dialect, "BEGIN IMMEDIATE", _driver_connection(sa).execute, "BEGIN IMMEDIATE")
        except BaseException:
            gate.release()
            raise
        return sa

    @contextlib.contextmanager
    def _grouped_tx(self, groups: Any) -> Iterator[Tx]:
        """A call's savepoint in the loop pass's shared transaction (server/storage/group.py)."""
        tx = groups.enter()
        try:
            yield tx
        except BaseException:
            groups.leave(False)
            raise
        groups.leave(True)

    @contextlib.contextmanager
    def tx(self, pipelined: bool = False) -> Iterator[Tx]:
        """A transaction: committed when the block ends, rolled back if it raises. On SQLite it
        takes the write lock at once (BEGIN IMMEDIATE), so read-then-write never deadlocks.
        On the event loop's thread, with group commit on, a savepoint in the loop pass's shared
        transaction instead (server/storage/group.py).

        `pipelined` (PostgreSQL; nothing on SQLite): the transaction runs in psycopg's pipeline
        mode, so writes whose results nobody reads are sent without waiting for each answer:
        the BEGIN goes with the first statement, a read waits only for what was queued before
        it, and the COMMIT goes with the last writes. Only for blocks that run `Prepared`
        statements alone (SQLAlchemy reads a cursor's description at once) and read no write's
        rowcount; a write's error is raised at the next read or at the commit, as SQLAlchemy's.
        It saves waiting, not CPU: psycopg sends each statement as it comes (a send and a poll
        each), so a pipelined transaction makes more system calls than the same statements
        one round trip at a time (enqueue and pop stay out of it)."""
        if pipelined and self.gate is None:
            with self._pipelined_tx() as tx:
                yield tx
            return
        groups = self.groups
        if groups is not None and groups.on_loop_thread():
            if groups.joins():
                with self._grouped_tx(groups) as tx:
                    yield tx
                return
            groups.commit_now()  # a transaction of its own: the open group commits first
        gate = self.gate
        if gate is not None:
            sa = self._begin_immediate(gate)
            owned = False
        else:
            sa = self.engine.connect()
            owned = True
        tx = Tx(sa)
        try:
            yield tx
        except BaseException:
            tx.rollback()
            raise
        else:
            try:
                tx.commit()
            except BaseException:
                tx.rollback()
                raise
        finally:
            if owned:
                sa.close()
            if gate is not None:
                gate.release()

    @contextlib.contextmanager
    def _pipelined_tx(self) -> Iterator[Tx]:
        """psycopg's pipeline with our own BEGIN and COMMIT in it (psycopg's implicit BEGIN would
        wait for its own answer): the connection is put in autocommit mode meanwhile, so psycopg
        leaves the transaction to these two statements."""
        sa = self.engine.connect()
        tx = Tx(sa, pipelined=True)
        raw = tx.raw
        try:
            raw.autocommit = True
            with _driver_errors(sa.dialect, "pipeline"), raw.pipeline():
                _BEGIN.run(raw, sa.dialect, None)
                yield tx
                _COMMIT.run(raw, sa.dialect, None)
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection: dropped below, the cause raised
                if raw.pgconn.transaction_status != _IDLE:
                    raw.rollback()
            raise
        finally:
            _leave_autocommit(sa)
            sa.close()

    # -- documents -----------------------------------------------------------------------
    # Statements are built once per table and executed with parameters: building and
    # cache-keying a fresh SQLAlchemy statement per call costs more than SQLite itself.
    def _stmt(self, kind: str, table: Table) -> Any:
        key = (kind, table.name)
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = self._build(kind, table)
        return stmt

    @staticmethod
    def _build(kind: str, table: Table) -> Prepared:
        columns = [c.name for c in table.columns if c.name != "id"]
        if kind == "get":
            return Prepared(select(table.c.doc).where(table.c.id == bindparam("p_id")))
        if kind == "last_update":
            return Prepared(select(table.c.last_update).where(table.c.id == bindparam("p_id")))
        if kind.startswith("get_v"):
            read = select(table.c.doc, _XMIN).where(table.c.id == bindparam("p_id"))
            return Prepared(read.with_for_update() if kind == "get_v_lock" else read)
        if kind == "get_columns":  # the document and its derived columns as stored (Store.save narrows)
            return Prepared(select(table.c.doc, *(table.c[name] for name in _derived(table)))
                            .where(table.c.id == bindparam("p_id")))
        if kind == "insert":
            return Prepared(insert(table).values({c.name: bindparam(c.name) for c in table.columns}))
        if kind == "delete":
            return Prepared(delete(table).where(table.c.id == bindparam("p_id")))
        query = update(table).where(table.c.id == bindparam("p_id"))
        if kind.startswith("save_cas"):
            query = query.where(table.c.status == bindparam("p_status"))
        if kind.endswith("_v"):  # only if unchanged since it was read, and the new version back
            query = query.where(bindparam("p_version") == _VERSION).returning(_XMIN)
        return Prepared(query.values({name: bindparam(name) for name in columns}))

    def _narrow(self, kind: str, table: Table, names: tuple[str, ...]) -> Prepared:
        """`kind` ("save" or "save_cas") writing the document and only the derived columns
        `names`: SQLite then leaves alone the indexes of the columns that did not change."""
        key = (kind, table.name, names)
        stmt = self._statements.get(key)
        if stmt is None:
            query = update(table).where(table.c.id == bindparam("p_id"))
            if kind == "save_cas":
                query = query.where(table.c.status == bindparam("p_status"))
            stmt = self._statements[key] = Prepared(query.values({n: bindparam(n) for n in ("doc", *names)}))
        return stmt

    def _save_statement(self, conn: Tx, table: Table, kind: str, key: tuple[str, str], params: dict) -> Prepared:
        """The UPDATE for a save: narrowed to the changed columns when this transaction read
        them (SQLite tasks: an index entry rewritten unchanged is a page written to the WAL)."""
        stored = conn.stored.get(key) if isinstance(conn, Tx) else None
        if stored is None:
            return self._stmt(kind, table)
        return self._narrow(kind, table, tuple(name for name, value in stored.items() if params[name] != value))

    def get(self, conn: Tx, table: Table, doc_id: str) -> dict | None:
        if self.is_sqlite and table is t.tasks and isinstance(conn, Tx):
            row = conn.execute(self._stmt("get_columns", table), {"p_id": doc_id}).first()
            doc = row[0] if row else None
            if row:
                conn.stored[(table.name, doc_id)] = dict(zip(_derived(table), row[1:], strict=True))
        elif self.is_sqlite or not isinstance(conn, Tx):  # SQLite: one writer at a time, nothing to check
            row = conn.execute(self._stmt("get", table), {"p_id": doc_id}).first()
            doc = row[0] if row else None
        else:
            row = conn.execute(self._stmt("get_v", table), {"p_id": doc_id}).first()
            if row is None:
                return None
            conn.versions[(table.name, doc_id)] = row[1]
            doc = row[0]
        if doc is not None and table is t.tasks and isinstance(conn, Tx):
            conn.metrics[doc_id] = metric_rows(doc)
        return doc

    def get_each(self, conn: Tx, table: Table, doc_ids: Sequence[str], *, lock: bool = False) -> dict[str, dict]:
        """The documents of `doc_ids` that exist, read as `get` reads one (their versions kept for
        `save`), the reads sent together (a pipelined transaction: one round trip for all).
        `lock` (PostgreSQL): the rows stay locked until the transaction ends (FOR UPDATE), so
        concurrent writers of the same documents take turns instead of conflicting; pass the ids
        sorted, so that two of them lock in the same order."""
        versioned = not self.is_sqlite
        kind = ("get_v_lock" if lock else "get_v") if versioned else "get"
        found = conn.execute_each(self._stmt(kind, table),
                                  [{"p_id": doc_id} for doc_id in doc_ids])
        docs: dict[str, dict] = {}
        for doc_id, rows in zip(doc_ids, found, strict=True):
            row = rows.first()
            if row is None or row[0] is None:
                continue
            if versioned:
                conn.versions[(table.name, doc_id)] = row[1]
                if lock:
                    conn.locked.add((table.name, doc_id))
            docs[doc_id] = row[0]
            if table is t.tasks:
                conn.metrics[doc_id] = metric_rows(row[0])
        return docs

    def last_updates(self, conn: Tx, table: Table, doc_ids: Sequence[str]) -> dict[str, float]:
        """{id: its last_update column} of those of `doc_ids` that exist (no document is read)."""
        found = conn.execute_each(self._stmt("last_update", table), [{"p_id": doc_id} for doc_id in doc_ids])
        return {doc_id: rows.first()[0] for doc_id, rows in zip(doc_ids, found, strict=True) if rows.first()}

    def get_many(self, conn: Tx, table: Table, where: Sequence[Any] = ()) -> list[dict]:
        query = select(table.c.doc)
        for clause in where:
            query = query.where(clause)
        return [dict(row[0]) for row in conn.execute(query)]

    def insert(self, conn: Tx, table: Table, doc: dict) -> None:
        if isinstance(conn, Tx):
            conn.stored.pop((table.name, doc["id"]), None)
        conn.execute(self._stmt("insert", table), {"id": doc["id"], "doc": doc, **columns_for(table, doc)})
        if table is t.tasks:
            self._write_metrics(conn, doc)

    def save(self, conn: Tx, table: Table, doc: dict, *, expect_status: str | None = None) -> bool:
        """Write a whole document back. With `expect_status`, only if the stored status still
        equals it (compare-and-set); returns whether a row was written."""
        params = {"p_id": doc["id"], "doc": doc, **columns_for(table, doc)}
        kind = "save" if expect_status is None else "save_cas"
        if expect_status is not None:
            params["p_status"] = expect_status
        key = (table.name, doc["id"])
        version = conn.versions.get(key) if isinstance(conn, Tx) else None
        if expect_status is None and isinstance(conn, Tx) and key in conn.locked:
            # read FOR UPDATE in this transaction: the row is there and unchanged by others, so
            # the write's answer need not be waited for (a pipelined transaction sends it on)
            conn.execute(self._stmt(kind, table), params)
            saved = True
        elif version is None:
            saved = conn.execute(self._save_statement(conn, table, kind, key, params), params).rowcount > 0
            if saved and isinstance(conn, Tx) and key in conn.stored:
                conn.stored[key] = {name: params[name] for name in conn.stored[key]}
        else:
            saved = self._save_versioned(conn, table, kind, params, key, version)
        if saved and table is t.tasks:
            self._replace_metrics(conn, doc)
        return saved

    def _replace_metrics(self, conn: Tx, doc: dict) -> None:
        """The task's task_metrics rows follow its saved document: rewritten unless this transaction
        read the task with the very same rows (a status change: no statement at all). When none
        of the rows read went away (metric reports only add series and move values), only the
        changed rows are written, as one upsert."""
        rows = metric_rows(doc)
        before = conn.metrics.get(doc["id"]) if isinstance(conn, Tx) else None
        if before == rows:
            return
        if before is not None and isinstance(conn, Tx):
            changed = _changed_rows(before, rows)
            if changed is not None:
                conn.execute_many(_UPSERT_METRIC, changed)
                conn.metrics[doc["id"]] = rows
                return
        self._clear_metrics(conn, doc["id"])
        self._write_metrics(conn, doc, rows)

    def _save_versioned(self, conn: Tx, table: Table, kind: str, params: dict, key: tuple[str, str],
                        version: str) -> bool:
        """PostgreSQL: write only over the version this transaction read; another transaction's
        write in between (a lost update otherwise) is a WriteConflict, and the call runs again."""
        row = conn.execute(self._stmt(kind + "_v", table), {**params, "p_version": version}).first()
        if row is None:
            raise WriteConflict(f"{key[0]} {key[1]} changed while this call was writing it")
        conn.versions[key] = row[0]
        return True

    def delete(self, conn: Tx, table: Table, doc_id: str) -> bool:
        if isinstance(conn, Tx):
            conn.stored.pop((table.name, doc_id), None)
        if table is t.tasks:
            self._clear_metrics(conn, doc_id)
            if isinstance(conn, Tx):
                conn.metrics.pop(doc_id, None)
        return conn.execute(self._stmt("delete", table), {"p_id": doc_id}).rowcount > 0

    # -- task_metrics: follows each task's last_metrics (tables.task_metrics) ----------------
    @staticmethod
    def _clear_metrics(conn: Tx, task_id: str) -> None:
        conn.execute(_CLEAR_METRICS, {"p_task": task_id})

    @staticmethod
    def _write_metrics(conn: Tx, doc: dict, rows: list[dict] | None = None) -> None:
        rows = metric_rows(doc) if rows is None else rows
        if isinstance(conn, Tx):
            conn.execute_many(_INSERT_METRIC, rows)  # one executemany per save
            conn.metrics[doc["id"]] = rows
        elif rows:
            conn.execute(insert(t.task_metrics), rows)

    @staticmethod
    def delete_tasks(conn: Tx, task_ids: list[str]) -> None:
        """Delete many tasks and their task_metrics rows (ids in one statement: callers chunk them)."""
        conn.execute(delete(t.task_metrics).where(t.task_metrics.c.task.in_(task_ids)))
        for task_id in task_ids if isinstance(conn, Tx) else ():
            conn.metrics.pop(task_id, None)
            conn.stored.pop((t.tasks.name, task_id), None)
        conn.execute(delete(t.tasks).where(t.tasks.c.id.in_(task_ids)))

    # -- key/value ---------------------------------------------------------------------
    def meta_get(self, conn: Tx, key: str) -> str | None:
        row = conn.execute(select(t.server_meta.c.value).where(t.server_meta.c.key == key)).first()
        return row[0] if row else None

    def meta_set(self, conn: Tx, key: str, value: str) -> None:
        if self.meta_get(conn, key) is None:
            conn.execute(insert(t.server_meta).values(key=key, value=value))
        else:
            conn.execute(update(t.server_meta).where(t.server_meta.c.key == key).values(value=value))
