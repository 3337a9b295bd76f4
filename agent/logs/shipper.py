"""Shipping a child process's console output to the server as `log` events.

    child stdout ──pipe──> OutputReader ─┐                  ┌─> send(events)   (ApiClient.add_events)
    child stderr ──pipe──> OutputReader ─┴─> LogShipper ────┤
                                          (batch, redact)   └─> spool file while the server is away

`OutputReader` turns raw pipe bytes into display lines; `LogShipper` batches lines into events on
a background thread, by size and by age, and delivers them in order. While the server is
unreachable, batches go to an append-only spool file (one JSON record per batch, fsync'd) and
are retried with backoff; newer lines never overtake spooled ones. Nothing is dropped silently:
lines the server rejects go to a `.rejected` file, and whatever is undeliverable at close stays
on disk, with its path in the `ShipReport`. Delivery is at-least-once: if the agent dies while
draining the spool, batches sent just before may be sent again from it.

The reading side lives in agent.logread, the spool file format in agent.spool.

A daemon uses it like this:

    shipper = LogShipper(client.add_events, task_id=task, worker=worker_id,
                         spool_path=work_dir / f"{task}.logspool", redactor=redactor).start()
    readers = [OutputReader(proc.stdout.fileno(), partial(shipper.add, level="info")).start(),
               OutputReader(proc.stderr.fileno(), partial(shipper.add, level="error")).start()]
    ... proc.wait(); [reader.join() for reader in readers]
    report = shipper.close(timeout_s=30)     # report.complete / report.spool_path
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from agent.logs.reader import LineSplitter, OutputReader  # re-exported: the runner imports both from here
from agent.logs.spool import Event, Spool, record_bytes
from shipyard.errors import AuthError, ServerError, ServerUnreachable
from shipyard.redact import Redactor

__all__ = ["LineSplitter", "LogShipper", "OutputReader", "ShipReport", "ShipStats"]

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 64 * 1024

Send = Callable[[list[Event]], object]


@dataclass
class ShipStats:
    lines_received: int = 0
    lines_shipped: int = 0
    lines_spooled: int = 0  # lines that went through the spool (most are shipped later)
    lines_rejected: int = 0  # refused by the server; kept in the .rejected file
    events_shipped: int = 0
    send_failures: int = 0


@dataclass(frozen=True)
class ShipReport:
    stats: ShipStats
    lines_undelivered: int  # still in the spool file, or never left memory if `error` is set
    spool_path: Path | None  # set when undelivered lines are waiting there
    rejected_path: Path | None  # set when the server refused some lines
    error: str | None = None  # the shipper thread died (or didn't stop in time)

    @property
    def complete(self) -> bool:
        return self.lines_undelivered == 0 and self.stats.lines_rejected == 0 and self.error is None


class _Block(NamedTuple):
    """Consecutive lines handed to `add` at once (a reader's whole chunk), kept as one string:
    per-line objects cost more than the rest of the shipping path (issue 24's log throughput)."""

    timestamp: int
    level: str
    text: str   # the lines, joined with "\n"
    lines: int
    size: int   # UTF-8 bytes, plus one per line for the joining newline


def _blocks(text: str, limit: int) -> list[tuple[str, int, int]]:
    """`text` as (text, lines, size) pieces of at most `limit` bytes, cut between lines (a single
    longer line stays whole, in a piece of its own)."""
    lines = text.count("\n") + 1
    size = (len(text) if text.isascii() else len(text.encode("utf-8", "replace"))) + lines
    if size <= limit:
        return [(text, lines, size)]
    pieces: list[tuple[str, int, int]] = []
    group: list[str] = []
    group_size = 0
    for line in text.split("\n"):
        line_size = len(line.encode("utf-8", "replace")) + 1
        if group and group_size + line_size > limit:
            pieces.append(("\n".join(group), len(group), group_size))
            group, group_size = [], 0
        group.append(line)
        group_size += line_size
    pieces.append(("\n".join(group), len(group), group_size))
    return pieces


class LogShipper:
    """Batches lines into `log` events on a background thread and delivers them in order."""

    def __init__(
        self,
        send: Send,
        *,
        task_id: str,
        worker: str,
        spool_path: Path,
        redactor: Redactor | None = None,
        batch_ms: int = 200,
        batch_bytes: int = 256 * 1024,
        max_event_bytes: int = MAX_EVENT_BYTES,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._send = send
        self._task_id = task_id
        self._worker = worker
        self._spool = Spool(Path(spool_path))
        self._rejected = Spool(Path(f"{spool_path}.rejected"))
        self._redact = redactor.redact if redactor is not None else None
        self._batch_s = batch_ms / 1000
        self._batch_bytes = batch_bytes
        self._max_event_bytes = max_event_bytes
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._clock = clock
        self._wall = wall_clock
        self._cond = threading.Condition()
        self._pending: deque[_Block] = deque()
        self._pending_bytes = 0
        self._oldest = 0.0  # clock() when the first pending line arrived
        self._urgent = False  # a line added `at_once` is pending: the batch is due now
        self._last_line_ms = 0
        self._last_event_ms = 0
        self._retry_at = 0.0
        self._backoff = retry_initial_s
        self._closing = False
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None
        self._stats = ShipStats()

    # --- the caller's side ----------------------------------------------------------------------

    def start(self) -> LogShipper:
        self._thread = threading.Thread(target=self._run, name=f"log-shipper-{self._task_id}", daemon=True)
        self._thread.start()
        return self

    def add(self, text: str, level: str = "info", *, at_once: bool = False) -> None:
        """Queue `text` (one or more lines) for shipping; stamped now, redacted here. `at_once`:
        ship it (with whatever waits before it) without waiting for the batch to fill or age,
        e.g. a task's first output, which a person watching the console waits for."""
        if self._redact is not None:
            text = self._redact(text)
        pieces = _blocks(text, self._max_event_bytes)
        with self._cond:
            if self._closing:
                raise RuntimeError("log shipper is closed")
            stamp = self._last_line_ms = max(self._last_line_ms, int(self._wall() * 1000))
            was_empty = not self._pending
            if was_empty:
                self._oldest = self._clock()
            for piece, lines, size in pieces:
                self._pending.append(_Block(stamp, level, piece, lines, size))
                self._pending_bytes += size
                self._stats.lines_received += lines
            self._urgent = self._urgent or at_once
            if was_empty or at_once or self._pending_bytes >= self._batch_bytes:
                self._cond.notify()

    @property
    def stats(self) -> ShipStats:
        with self._cond:
            return replace(self._stats)

    def close(self, timeout_s: float = 30.0) -> ShipReport:
        """Flush everything, keep retrying the spool until `timeout_s`, then report."""
        if self._thread is None:
            self.start()
        assert self._thread is not None
        with self._cond:
            self._closing = True
            self._deadline = self._clock() + timeout_s
            self._cond.notify()
        self._thread.join(timeout_s + 5.0)
        if self._thread.is_alive():
            with self._cond:
                stuck = self._stats.lines_received - self._stats.lines_shipped - self._stats.lines_rejected
                return ShipReport(replace(self._stats), stuck, self._spool.path, None, "shipper did not stop in time")
        if self._crash is not None:
            self._spool_leftovers()  # the thread is gone: nothing else touches the spool now
        return self._final_report()

    def __enter__(self) -> LogShipper:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        report = self.close()
        if not report.complete:
            log.error("task %s: log shipping incomplete: %s", self._task_id, report)

    # --- the shipper thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                blocks = self._take()
                if blocks:
                    self._deliver(blocks)
                self._retry_spool()
                if self._finished():
                    break
        except BaseException as exc:
            self._crash = exc  # close() spools what is left and reports it
            raise

    def _take(self) -> list[_Block]:
        """Wait until a batch is due (size, age or closing) or a spool retry is, then pop it."""
        with self._cond:
            while (wait := self._due_in(self._clock())) > 0:
                self._cond.wait(wait)
            if not self._pending or not self._batch_due(self._clock()):
                return []
            return self._pop_batch()

    def _due_in(self, now: float) -> float:
        candidates = [float("inf")]
        if self._pending:
            candidates.append(0.0 if self._batch_due(now) else self._oldest + self._batch_s - now)
        if not self._spool.empty:
            candidates.append(self._retry_at - now)
        if self._closing:
            candidates.append(self._deadline - now if not self._spool.empty else 0.0)
        due = min(candidates)
        return due if due != float("inf") else 3600.0

    def _batch_due(self, now: float) -> bool:
        return (self._closing or self._urgent or self._pending_bytes >= self._batch_bytes
                or now - self._oldest >= self._batch_s)

    def _pop_batch(self) -> list[_Block]:
        batch: list[_Block] = []
        size = 0
        while self._pending and (not batch or size < self._batch_bytes):
            batch.append(self._pending.popleft())
            size += batch[-1].size
        self._pending_bytes -= size
        self._urgent = False
        return batch

    def _finished(self) -> bool:
        with self._cond:
            if not self._closing or self._pending:
                return False
            return self._spool.empty or self._clock() >= self._deadline

    def _deliver(self, blocks: list[_Block]) -> None:
        events = self._events(blocks)
        lines = sum(block.lines for block in blocks)
        if not self._spool.empty:  # older lines are waiting: queue behind them
            self._to_spool(events, lines)
            return
        try:
            self._send(events)
        except (ServerUnreachable, ServerError) as exc:
            if not _transient(exc):
                self._reject(events, lines, exc)
                return
            log.warning("task %s: cannot ship logs (%s); spooling to %s", self._task_id, exc, self._spool.path)
            self._to_spool(events, lines)
            self._schedule_retry()
        except BaseException:
            self._to_spool(events, lines)  # a bug in send: keep the batch, then fail loudly
            raise
        else:
            self._shipped(events, lines)

    def _retry_spool(self) -> None:
        """Send spooled batches oldest first, until one fails or the spool is empty."""
        if self._spool.empty or self._clock() < self._retry_at:
            return
        while not self._spool.empty:
            record = self._spool.peek()
            if not record.events:
                self._set_aside(record.raw, record.lines, "unreadable spool record")
            else:
                try:
                    self._send(record.events)
                except (ServerUnreachable, ServerError) as exc:
                    if _transient(exc):
                        self._schedule_retry()
                        return
                    self._set_aside(record.raw, record.lines, str(exc))
                else:
                    self._shipped(record.events, record.lines)
            self._spool.commit(record)
        self._backoff = self._retry_initial
        log.info("task %s: spooled logs delivered", self._task_id)

    def _events(self, blocks: Sequence[_Block]) -> list[Event]:
        """Consecutive lines of one level share an event, up to max_event_bytes of text."""
        events: list[Event] = []
        group: list[_Block] = []
        size = 0
        for block in blocks:
            if group and (block.level != group[0].level or size + block.size > self._max_event_bytes):
                events.append(self._event(group))
                group, size = [], 0
            group.append(block)
            size += block.size
        if group:
            events.append(self._event(group))
        return events

    def _event(self, group: Sequence[_Block]) -> Event:
        """One log event; timestamps strictly increase, so sorting by them keeps the order."""
        self._last_event_ms = max(group[0].timestamp, self._last_event_ms + 1)
        return {
            "type": "log",
            "task": self._task_id,
            "timestamp": self._last_event_ms,
            "level": group[0].level,
            "worker": self._worker,
            "msg": group[0].text if len(group) == 1 else "\n".join(block.text for block in group),
        }

    def _shipped(self, events: Sequence[Event], lines: int) -> None:
        with self._cond:
            self._stats.lines_shipped += lines
            self._stats.events_shipped += len(events)

    def _to_spool(self, events: list[Event], lines: int) -> None:
        self._spool.append(events, lines)
        with self._cond:
            self._stats.lines_spooled += lines

    def _reject(self, events: list[Event], lines: int, exc: Exception) -> None:
        self._set_aside(record_bytes(events, lines), lines, str(exc))

    def _set_aside(self, raw: bytes, lines: int, why: str) -> None:
        """Lines the server won't take: keep them in the .rejected file and say so."""
        self._rejected.append_raw(raw if raw.endswith(b"\n") else raw + b"\n")
        log.error("task %s: %d log line(s) refused (%s); kept in %s", self._task_id, lines, why, self._rejected.path)
        with self._cond:
            self._stats.lines_rejected += lines

    def _schedule_retry(self) -> None:
        with self._cond:
            self._stats.send_failures += 1
            self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self._retry_max)

    def _spool_leftovers(self) -> None:
        """After a crash: write whatever is still in memory to the spool."""
        with self._cond:
            blocks, self._pending = list(self._pending), deque()
        if blocks:
            self._to_spool(self._events(blocks), sum(block.lines for block in blocks))

    def _final_report(self) -> ShipReport:
        spool_path, undelivered = self._spool.close()
        rejected_path, _ = self._rejected.close()
        error = f"shipper thread crashed: {self._crash!r}" if self._crash is not None else None
        if spool_path is not None:
            log.error("task %s: %d log line(s) undelivered, kept in %s", self._task_id, undelivered, spool_path)
        return ShipReport(self.stats, undelivered, spool_path, rejected_path, error)


def _transient(exc: Exception) -> bool:
    """Worth retrying: no answer, a server-side failure, or a credentials hiccup."""
    return isinstance(exc, (ServerUnreachable, AuthError)) or (isinstance(exc, ServerError) and exc.code >= 500)
