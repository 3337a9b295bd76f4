"""One transaction of a `Store` (`Tx`), and the calls that reach under SQLAlchemy to the driver.

    Tx                      a transaction: `Prepared` statements run straight on the DBAPI
                            connection, anything else through SQLAlchemy, both in the same
                            transaction; the versions, locks, task_metrics rows and derived
                            columns read in it (what Store.save writes against)
    _driver_connection(sa)  the driver's own connection under an open SQLAlchemy one
    _leave_autocommit(sa)   back to transactions after a pipeline, or the connection is dropped
    _driver_errors(...)     a block whose driver errors are raised as SQLAlchemy's
    _driver_call(...)       one driver call whose errors are raised as SQLAlchemy's

Store (server/storage/store.py) opens, commits and rolls back a Tx; group commit
(server/storage/group.py) is handed `Tx`, `_driver_call` and `_driver_connection` by the Store.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from server.storage.prepared import ArrayWrite, Prepared


class Tx:
    """One transaction. `execute` runs `Prepared` statements straight on the DBAPI connection
    and anything else through SQLAlchemy; both share the connection and its transaction."""

    __slots__ = ("sa", "raw", "dialect", "versions", "locked", "metrics", "stored", "pending", "pipelined",
                 "cursor", "seen", "empty")

    def __init__(self, sa: Connection, pipelined: bool = False):
        self.sa = sa
        self.raw = _driver_connection(sa)
        self.dialect = sa.dialect
        self.pipelined = pipelined  # Store.tx(pipelined=True): Prepared statements only
        # PostgreSQL: (table, id) -> the row version (xmin) each document was read at (Store.save)
        self.versions: dict[tuple[str, str], str] = {}
        # PostgreSQL: (table, id) of the rows read FOR UPDATE: no other transaction can change them
        self.locked: set[tuple[str, str]] = set()
        # task id -> its task_metrics rows as stored, for the tasks read here: a save that leaves
        # last_metrics as it was (a status change) then writes no task_metrics statement
        self.metrics: dict[str, list[dict]] = {}
        # SQLite: (table, id) -> the derived columns as stored, for the tasks read here (a save
        # then writes only those that change; see Store._save_statement)
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        # key -> fn(tx): work done once per key just before the COMMIT (`before_commit`)
        self.pending: dict[Any, Callable[[Tx], None]] = {}
        # the DBAPI cursor the transaction's Prepared statements run on, one after another (made
        # at the first; in a pipeline each statement has its own, its answer read later)
        self.cursor: Any = None
        # (table, id) of rows a statement here has seen exist (a PostgreSQL pop sees its queue):
        # a later check for them in this transaction needs no statement of its own
        self.seen: set[tuple[str, str]] = set()
        # queues a PostgreSQL pop here found without any entry (claim.py: known empty until notified)
        self.empty: set[str] = set()

    def execute(self, statement: Any, params: Any = None) -> Any:
        if isinstance(statement, Prepared):
            if self.pipelined:
                return statement.run(self.raw, self.dialect, params)
            if self.cursor is None:
                self.cursor = self.raw.cursor()
            return statement.run(self.raw, self.dialect, params, self.cursor)
        if self.pipelined:
            raise RuntimeError("a pipelined transaction runs Prepared statements only")
        return self.sa.execute(statement) if params is None else self.sa.execute(statement, params)

    def execute_each(self, statement: Prepared, each: Sequence[dict]) -> list[Any]:
        """`statement` once per parameter set, all sent before any answer is read; their rows."""
        return statement.run_each(self.raw, self.dialect, each)

    def execute_many(self, statement: Prepared | ArrayWrite, rows: Sequence[dict]) -> None:
        """A write once per parameter set in `rows` (one executemany, or an ArrayWrite's one
        statement over arrays on PostgreSQL)."""
        statement.run_many(self.raw, self.dialect, rows)

    def exec_driver_sql(self, sql: str, params: Any = None) -> Any:
        return self.sa.exec_driver_sql(sql) if params is None else self.sa.exec_driver_sql(sql, params)

    def before_commit(self, key: Any, fn: Callable[[Tx], None]) -> None:
        """Run `fn(tx)` once, just before this transaction commits, however often it is asked
        for under `key` (a queue's metrics sample: the state the transaction commits)."""
        self.pending[key] = fn

    def run_pending(self) -> None:
        """The `before_commit` work, in key order (the same lock order in every transaction)."""
        while self.pending:
            key = min(self.pending)
            self.pending.pop(key)(self)

    def commit(self) -> None:
        self.run_pending()
        if self.sa.in_transaction():
            self.sa.commit()  # SQLAlchemy began too (autobegin): let it end its own bookkeeping
        else:
            _driver_call(self.dialect, "COMMIT", self.raw.commit)

    def rollback(self) -> None:
        if self.sa.in_transaction():
            self.sa.rollback()
        else:
            _driver_call(self.dialect, "ROLLBACK", self.raw.rollback)


def _driver_connection(sa: Connection) -> Any:
    """The driver's own connection under an open SQLAlchemy connection (typed Optional by
    SQLAlchemy because a closed or invalidated one has none; ours are open while in use)."""
    return sa.connection.dbapi_connection


def _leave_autocommit(sa: Connection) -> None:
    """Back to transactions, or the connection is dropped from the pool: one left in autocommit
    mode would run the next caller's statements outside any transaction."""
    try:
        _driver_connection(sa).autocommit = False
    except Exception:  # noqa: BLE001 - a broken or still-aborted connection: not to be reused
        sa.invalidate()


@contextlib.contextmanager
def _driver_errors(dialect: Any, what: str) -> Iterator[None]:
    """The driver's errors raised in the block as SQLAlchemy's (IntegrityError, OperationalError...)."""
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(what, (), exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc


def _driver_call(dialect: Any, what: str, fn: Any, *args: Any) -> Any:
    """Call the driver directly, raising its errors as SQLAlchemy's (as Prepared does)."""
    try:
        return fn(*args)
    except dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(what, (), exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc
