"""The log spool: an append-only, fsync'd file of event batches awaiting delivery.

`LogShipper` (agent.logship) writes batches here while the server is unreachable and sends them
from the front, oldest first, once it is back; lines the server refuses go to a second spool,
the `.rejected` file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, NamedTuple

__all__ = ["Event", "Record", "Spool", "record_bytes"]

Event = dict[str, Any]


class Record(NamedTuple):
    events: list[Event]
    lines: int
    raw: bytes
    end: int  # file offset just after this record


def record_bytes(events: list[Event], lines: int) -> bytes:
    return json.dumps({"lines": lines, "events": events}, separators=(",", ":")).encode() + b"\n"


class Spool:
    """An append-only file of batches awaiting delivery, read from the front.

    One JSON object per line: {"lines": n, "events": [...]}. A record that doesn't parse (a
    write cut short by a crash) comes back with no events, for the caller to set aside.
    """

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[bytes] | None = None
        self._read_at = 0
        self._end = path.stat().st_size if path.exists() else 0  # a leftover spool is sent first
        if self._end and not self._ends_with_newline():
            self.append_raw(b"\n")  # a write cut short by a crash: keep the next record separate

    @property
    def empty(self) -> bool:
        return self._read_at >= self._end

    def append(self, events: list[Event], lines: int) -> None:
        self.append_raw(record_bytes(events, lines))

    def append_raw(self, data: bytes) -> None:
        handle = self._open()
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
        self._end += len(data)

    def peek(self) -> Record:
        handle = self._open()
        handle.seek(self._read_at)
        raw = handle.readline()
        end = self._read_at + len(raw)
        try:
            record = json.loads(raw)
            return Record(list(record["events"]), int(record["lines"]), raw, end)
        except (ValueError, KeyError, TypeError):
            return Record([], 0, raw, end)

    def commit(self, record: Record) -> None:
        """`record` is delivered (or set aside); when the spool is drained, empty the file."""
        self._read_at = record.end
        if self.empty and self._file is not None:
            self._file.truncate(0)
            self._read_at = self._end = 0

    def close(self) -> tuple[Path | None, int]:
        """Leave only undelivered records on disk: (path or None if nothing is left, lines left)."""
        if self.empty:
            self._close_file()
            self.path.unlink(missing_ok=True)
            return None, 0
        start, lines = self._read_at, 0
        while not self.empty:
            record = self.peek()
            lines += record.lines
            self._read_at = record.end
        self._compact(start)
        return self.path, lines

    def _compact(self, start: int) -> None:
        """Rewrite the file without the records already delivered (atomic replace)."""
        handle = self._open()
        handle.seek(start)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as out:
            while chunk := handle.read(1 << 20):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        self._close_file()
        os.replace(temporary, self.path)

    def _ends_with_newline(self) -> bool:
        handle = self._open()
        handle.seek(self._end - 1)
        return handle.read(1) == b"\n"

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a+b")
        return self._file

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
