"""Group commit on SQLite: the API calls the event loop runs in one pass share one COMMIT.

The loop runs light calls inline, one after another (server/rpc/offload.py). Alone, each is a
BEGIN IMMEDIATE ... COMMIT, and the COMMIT (the WAL append of every page the call changed, the
lock and wal-index updates) is about a third of an enqueue's or a pop's CPU; concurrent calls of
one queue change the same pages again and again. Grouped:

    first call of a loop pass     BEGIN IMMEDIATE (holding the store's gate); COMMIT scheduled
                                  with loop.call_soon, after the calls already ready to run
    each call's Store.tx()        SAVEPOINT ... RELEASE: its writes, all or none; a call that
                                  raises is rolled back alone (ROLLBACK TO)
    end of the pass               the calls' before-commit work once (Tx.before_commit: a
                                  queue's metrics sample, once per queue), then one COMMIT;
                                  every call in the group answers after it (`committed()`), so
                                  no answer is sent before its writes are on disk, as before

Only transactions of calls that opted in (`grouped()`, set by the API dispatcher for the call's
task) on the loop thread join. Any other transaction on that thread commits the open group
first and runs alone; pool threads use their own connections and wait on the gate, which the
group holds until its COMMIT. If SQLite undoes the whole transaction (an I/O error, a full disk),
the group fails: every call in it gets the error, none is answered as done.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from server.storage.store import Store, Tx

log = logging.getLogger("shipyard.server.storage")
_OPT_IN: ContextVar[bool] = ContextVar("shipyard_group_commit", default=False)
_JOINED: ContextVar[asyncio.Future | None] = ContextVar("shipyard_group_joined", default=None)


def grouped() -> Token[bool]:
    """The calling task's transactions (on the loop thread) may join a group commit, until
    `ungrouped(token)`."""
    return _OPT_IN.set(True)


def ungrouped(token: Token[bool]) -> None:
    _OPT_IN.reset(token)


async def committed() -> None:
    """Wait until the group this task's last transactions joined is committed (its error if not)."""
    future = _JOINED.get()
    if future is not None:
        _JOINED.set(None)
        await asyncio.shield(future)  # one caller leaving must not cancel the others' commit


class _Group:
    """One open transaction on the loop thread's connection, shared by savepoints."""

    __slots__ = ("sa", "raw", "future", "inside", "pending")

    def __init__(self, sa: Any, raw: Any, future: asyncio.Future):
        self.sa = sa
        self.raw = raw
        self.future = future
        self.inside = False  # a savepoint is open (Store.tx() blocks do not nest)
        self.pending: dict[Any, Callable] = {}  # the calls' Tx.before_commit work, merged


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # a failed group nobody awaited any more is not "never retrieved"


class GroupCommits:
    """The group commit of one store on one event loop's thread (see the module docstring)."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop):
        self.store = store
        self.loop = loop
        self.thread = threading.get_ident()
        self._open: _Group | None = None
        self.calls = 0    # transactions that joined a group
        self.commits = 0  # groups ended (committed or failed): calls / commits is the mean group size

    def joins(self) -> bool:
        """Does a transaction started now join the group?"""
        return threading.get_ident() == self.thread and _OPT_IN.get()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Tx]:
        from server.storage.store import Tx, _driver_call

        group = self._open or self._begin()
        if group.inside:
            raise RuntimeError("Store.tx() nested in another transaction of the same thread")
        dialect = group.sa.dialect
        _driver_call(dialect, "SAVEPOINT", group.raw.execute, "SAVEPOINT shipyard_call")
        group.inside = True
        self.calls += 1
        _JOINED.set(group.future)
        tx = Tx(group.sa)
        try:
            yield tx
        except BaseException:
            self._undo(group)
            raise
        else:
            try:
                _driver_call(dialect, "RELEASE", group.raw.execute, "RELEASE shipyard_call")
            except BaseException as exc:
                self._undo(group)
                raise exc
            group.pending.update(tx.pending)  # run once for the whole group, before its COMMIT
        finally:
            group.inside = False

    def _begin(self) -> _Group:
        from server.storage.store import _driver_connection

        gate = self.store.gate
        assert gate is not None  # SQLite only
        sa = self.store._begin_immediate(gate)  # holds the gate until the group ends
        raw = _driver_connection(sa)
        try:
            future = self.loop.create_future()
            future.add_done_callback(_retrieved)
            self.loop.call_soon(self.flush)
        except BaseException:
            raw.rollback()
            gate.release()
            raise
        self._open = _Group(sa, raw, future)
        return self._open

    def _undo(self, group: _Group) -> None:
        """A call's block raised: roll back its savepoint; if SQLite ended the whole transaction
        (or cannot roll back to it), the group has failed."""
        from server.storage.store import _driver_call

        try:
            _driver_call(group.sa.dialect, "ROLLBACK TO", group.raw.execute, "ROLLBACK TO shipyard_call")
            _driver_call(group.sa.dialect, "RELEASE", group.raw.execute, "RELEASE shipyard_call")
        except Exception as exc:  # noqa: BLE001 - the group's outcome, given to every call in it
            self._end(group, exc)
            return
        if not group.raw.in_transaction:
            self._end(group, RuntimeError("the database ended the shared transaction"))

    @staticmethod
    def _run_pending(group: _Group) -> None:
        """The calls' before-commit work (queue metrics samples), once for the group, in a
        savepoint of its own: if it fails, the calls' writes still commit without it."""
        from server.storage.store import Tx, _driver_call

        if not group.pending:
            return
        tx = Tx(group.sa)
        tx.pending = group.pending
        dialect = group.sa.dialect
        _driver_call(dialect, "SAVEPOINT", group.raw.execute, "SAVEPOINT shipyard_pending")
        try:
            tx.run_pending()
        except Exception:  # noqa: BLE001 - a derived sample lost; the calls' own work stands
            log.exception("before-commit work of a commit group failed; committing the calls without it")
            _driver_call(dialect, "ROLLBACK TO", group.raw.execute, "ROLLBACK TO shipyard_pending")
        _driver_call(dialect, "RELEASE", group.raw.execute, "RELEASE shipyard_pending")

    def flush(self) -> None:
        """Commit the open group, if any, and settle its calls' waits."""
        group = self._open
        if group is not None:
            self._end(group, None)

    def _end(self, group: _Group, failure: BaseException | None) -> None:
        from server.storage.store import _driver_call

        self._open = None
        self.commits += 1
        try:
            if failure is None:
                try:
                    self._run_pending(group)
                    if group.sa.in_transaction():
                        group.sa.commit()  # SQLAlchemy autobegan inside a call: let it end its own bookkeeping
                    else:
                        _driver_call(group.sa.dialect, "COMMIT", group.raw.commit)
                except Exception as exc:  # noqa: BLE001 - the group's outcome, given to every call in it
                    failure = exc
            if failure is not None:
                with contextlib.suppress(Exception):
                    if group.sa.in_transaction():
                        group.sa.rollback()
                    elif group.raw.in_transaction:
                        group.raw.rollback()
        finally:
            if self.store.gate is not None:
                self.store.gate.release()
            if not group.future.done():
                if failure is None:
                    group.future.set_result(None)
                else:
                    group.future.set_exception(failure)
