"""Group commit on SQLite: the API calls the event loop runs in one pass share one COMMIT.

The loop runs light calls inline, one after another (server/rpc/offload.py). Alone, each is a
BEGIN IMMEDIATE ... COMMIT, and the COMMIT (the WAL append of every page the call changed, the
lock and wal-index updates) is about a third of an enqueue's or a pop's CPU; concurrent calls of
one queue change the same pages again and again. Grouped:

    first call of a loop pass     BEGIN IMMEDIATE (holding the store's gate); COMMIT scheduled
                                  with loop.call_soon, after the calls already ready to run
    each later call's Store.tx()  SAVEPOINT ... RELEASE: its writes, all or none; a call that
                                  raises is rolled back alone (ROLLBACK TO; the first call
                                  needs none: if it raises, the transaction holds nothing else
                                  and is rolled back whole)
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
import threading
from contextvars import ContextVar, Token
from typing import Any, Callable

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
        await future


class _FirstFailed(Exception):
    """The group's first call raised: the transaction holds nothing else, so it is rolled back
    whole and the group ends empty (nobody else waits on it)."""


_FIRST_FAILED = _FirstFailed()


class _Outcome(asyncio.Future):
    """A group's outcome, awaited by each of its calls. It cannot be cancelled: one caller
    leaving (its task cancelled) must not cancel the others' wait; that caller's task still
    ends cancelled once the group is settled."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class _Group:
    """One open transaction on the loop thread's connection, shared by savepoints."""

    __slots__ = ("sa", "raw", "future", "inside", "saved", "pending")

    def __init__(self, sa: Any, raw: Any, future: asyncio.Future):
        self.sa = sa
        self.raw = raw
        self.future = future
        self.inside: Any = None  # the call whose block is open (Store.tx() blocks do not nest)
        self.saved = False  # that call has a savepoint (every call but the group's first)
        self.pending: dict[Any, Callable] = {}  # the calls' Tx.before_commit work, merged


class GroupCommits:
    """The group commit of one store on one event loop's thread (see the module docstring).
    Store.tx() calls `enter()` and then `leave(ok)` around each call's block."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop, tx: Callable[[Any], Any],
                 call: Callable[..., Any], driver: Callable[[Any], Any]):
        """`store`'s transactions on this thread, grouped on `loop`; `tx(sa)` makes a Tx, `call`
        runs a driver call raising SQLAlchemy's errors, `driver(sa)` is the DBAPI connection
        (server/storage/store.py passes its own: this module does not import it)."""
        self.store = store
        self.loop = loop
        self.thread = threading.get_ident()
        self._tx = tx
        self._call = call
        self._driver = driver
        self._open: _Group | None = None
        self.calls = 0    # transactions that joined a group
        self.commits = 0  # groups ended (committed or failed): calls / commits is the mean group size

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread

    @staticmethod
    def joins() -> bool:
        """Does a transaction started now (on the loop thread) join the group?"""
        return _OPT_IN.get()

    def enter(self) -> Any:
        """A call's transaction begins: the group's first opens it (and needs no savepoint:
        if it fails, the whole transaction is rolled back), each later one is a savepoint."""
        group = self._open
        if group is None:
            group = self._begin()
        elif group.inside is not None:
            raise RuntimeError("Store.tx() nested in another transaction of the same thread")
        else:
            self._call(group.sa.dialect, "SAVEPOINT", group.raw.execute, "SAVEPOINT shipyard_call")
            group.saved = True
        group.inside = tx = self._tx(group.sa)
        self.calls += 1
        _JOINED.set(group.future)
        return tx

    def leave(self, ok: bool) -> None:
        """The call's block ended: keep its writes (`ok`), or undo them alone."""
        group = self._open
        assert group is not None and group.inside is not None  # a group fails only in leave()
        tx, group.inside = group.inside, None
        if not ok and group.saved:
            self._undo(group)
            return
        if not ok:
            self._end(group, _FIRST_FAILED)
            return
        if group.saved:
            try:
                self._call(group.sa.dialect, "RELEASE", group.raw.execute, "RELEASE shipyard_call")
            except BaseException:
                self._undo(group)
                raise
        if tx.pending:
            group.pending.update(tx.pending)  # run once for the whole group, before its COMMIT

    def _begin(self) -> _Group:
        gate = self.store.gate
        assert gate is not None  # SQLite only
        sa = self.store._begin_immediate(gate)  # holds the gate until the group ends
        raw = self._driver(sa)
        try:
            future = _Outcome(loop=self.loop)
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
        try:
            self._call(group.sa.dialect, "ROLLBACK TO", group.raw.execute, "ROLLBACK TO shipyard_call")
            self._call(group.sa.dialect, "RELEASE", group.raw.execute, "RELEASE shipyard_call")
        except Exception as exc:  # noqa: BLE001 - the group's outcome, given to every call in it
            self._end(group, exc)
            return
        if not group.raw.in_transaction:
            self._end(group, RuntimeError("the database ended the shared transaction"))

    def flush(self) -> None:
        """(The end of a loop pass.) Commit the open group, if any, and settle its calls' waits;
        a call that awaited inside its transaction block is waited for, one pass at a time."""
        group = self._open
        if group is not None and group.inside is not None:
            self.loop.call_soon(self.flush)
        elif group is not None:
            self._end(group, None)

    def commit_now(self) -> None:
        """Commit the open group at once (a transaction of its own begins on the loop thread)."""
        group = self._open
        if group is not None and group.inside is not None:
            raise RuntimeError("Store.tx() nested in another transaction of the same thread")
        if group is not None:
            self._end(group, None)

    def _end(self, group: _Group, failure: BaseException | None) -> None:
        self._open = None
        self.commits += 1
        try:
            if failure is None:
                failure = self._commit(group)
            if failure is not None:
                self._roll_back(group)
        finally:
            if self.store.gate is not None:
                self.store.gate.release()
            if failure is None or failure is _FIRST_FAILED:
                group.future.set_result(None)
            else:
                group.future.set_exception(failure)
                group.future.exception()  # retrieved: a group nobody awaits any more logs nothing

    def _commit(self, group: _Group) -> BaseException | None:
        """The calls' before-commit work, then the COMMIT; the error if either failed (then the
        whole group fails: nothing of it is committed, every call in it gets the error)."""
        try:
            if group.pending:
                tx = self._tx(group.sa)
                tx.pending = group.pending
                tx.run_pending()
            if group.sa.in_transaction():
                group.sa.commit()  # SQLAlchemy autobegan inside a call: let it end its own bookkeeping
            else:
                self._call(group.sa.dialect, "COMMIT", group.raw.commit)
        except Exception as exc:  # noqa: BLE001 - the group's outcome, given to every call in it
            return exc
        return None

    @staticmethod
    def _roll_back(group: _Group) -> None:
        try:
            if group.sa.in_transaction():
                group.sa.rollback()
            elif group.raw.in_transaction:
                group.raw.rollback()
        except Exception:  # noqa: BLE001 - the connection is rolled back or gone either way
            pass
