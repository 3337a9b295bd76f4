"""Reading a child process's console output: pipe bytes -> the lines a terminal would show.

`LineSplitter` does the byte-level work (partial lines, \\r progress rewrites, UTF-8, overlong
lines); `OutputReader` runs it over a pipe on a thread and hands each line to a sink - in the
agent, `LogShipper.add` (agent.logship).
"""
from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Sequence

__all__ = ["LineSplitter", "OutputReader"]

READ_CHUNK_BYTES = 64 * 1024
MAX_LINE_BYTES = 64 * 1024
PROGRESS_INTERVAL_S = 30.0
# After a read that found less than half a chunk, let the pipe fill this long before reading
# again. A reader blocked in read() is woken by every write of an unbuffered task (the agent sets
# PYTHONUNBUFFERED): 200,000 small writes meant ~60,000 wake-ups, which slowed the *task* more
# than the reading itself (bench/bench_logs.py: a bare reader napping 2 ms between short reads
# moves ~1.6x the lines/s of one that blocks). Costs at most this much latency per chunk; the
# first chunk (a task's first line) is read the moment it is written.
COALESCE_S = 0.002


class LineSplitter:
    """Turns a byte stream into the lines a terminal would end up showing.

    Partial lines wait for the next chunk; `\\r` rewrites within a line keep only the last
    non-empty segment (tqdm bars); bytes decode as UTF-8 with replacement characters; lines
    longer than `max_line_bytes` come out in pieces, never as one giant string.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES):
        self._max = max_line_bytes
        self._pending = b""
        self._rewritten = False  # the pending line has had a \r rewrite

    def feed(self, data: bytes) -> list[str]:
        """The lines completed by `data`."""
        buffer = self._pending + data
        lines: list[str] = []
        end = buffer.rfind(b"\n")
        if end >= 0:
            for line in buffer[:end].decode("utf-8", "replace").split("\n"):
                lines.extend(self._complete(line))
            buffer = buffer[end + 1:]
            self._rewritten = False
        lines.extend(self._hold(buffer))
        return lines

    def feed_joined(self, data: bytes) -> str | None:
        """`"\\n".join(self.feed(data))`, None for no line. A chunk that needs nothing but
        decoding (valid UTF-8, no \\r, no overlong line) is decoded in one piece, with no string
        per line: the per-line work was most of the agent's CPU for a chatty task (issue 24)."""
        buffer = self._pending + data
        end = buffer.rfind(b"\n")
        text = self._plain(buffer, end, len(data))
        if text is None:
            lines = self.feed(data)
            return "\n".join(lines) if lines else None
        self._rewritten = False
        rest = self._hold(buffer[end + 1:])
        return "\n".join([text, *rest]) if rest else text

    def _plain(self, buffer: bytes, end: int, fed: int) -> str | None:
        """buffer[:end] decoded, if its lines need nothing else: no \\r, and none longer than
        the limit - only the first could be (it holds the pending bytes), every other one lies
        within the `fed` chunk; strictly decoded, so a character is as long as its bytes."""
        if end < 0 or fed > self._max or buffer.find(b"\r", 0, end) >= 0 or buffer.find(b"\n") > self._max:
            return None
        try:
            return buffer[:end].decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _hold(self, buffer: bytes) -> list[str]:
        """Keep the unterminated rest for the next chunk; the pieces cut off an overlong one."""
        buffer = self._collapse(buffer)
        pieces: list[str] = []
        start = 0
        while len(buffer) - start > self._max:
            cut = _utf8_boundary(buffer, start, start + self._max)
            pieces.append(buffer[start:cut].decode("utf-8", "replace"))
            start = cut
        self._pending = buffer[start:]
        return pieces

    def finish(self) -> list[str]:
        """At end of stream: the unterminated last line, if any."""
        pending, self._pending = self._pending, b""
        self._rewritten = False
        return self._complete(pending.decode("utf-8", "replace")) if pending else []

    def progress(self) -> str | None:
        """What the unterminated line shows now, if it is being rewritten with \\r."""
        if not self._rewritten:
            return None
        return self._pending.rstrip(b"\r").decode("utf-8", "replace") or None

    def _collapse(self, pending: bytes) -> bytes:
        """Drop the segments of the pending line that a later \\r has overwritten."""
        cut = pending.rstrip(b"\r").rfind(b"\r")
        if cut < 0:
            return pending
        self._rewritten = True
        return pending[cut + 1:]

    def _complete(self, line: str) -> list[str]:
        if "\r" in line:
            line = line.rstrip("\r").rpartition("\r")[2]
        if len(line) * 4 <= self._max:
            return [line]
        encoded = line.encode("utf-8")
        if len(encoded) <= self._max:
            return [line]
        pieces, start = [], 0
        while start < len(encoded):
            end = start + self._max
            cut = _utf8_boundary(encoded, start, end) if end < len(encoded) else len(encoded)
            pieces.append(encoded[start:cut].decode("utf-8", "replace"))
            start = cut
        return pieces


def _utf8_boundary(data: bytes, start: int, cut: int) -> int:
    """`cut`, moved back so it doesn't split a UTF-8 sequence (unless the bytes aren't UTF-8)."""
    for candidate in range(cut, max(cut - 4, start), -1):
        if data[candidate] & 0xC0 != 0x80:
            return candidate
    return cut


class OutputReader:
    """Reads a pipe in 64 KiB chunks until EOF and hands each line to `sink`; after a short read
    it waits `coalesce_s` so the next read takes a chunk rather than one line (COALESCE_S)."""

    def __init__(
        self,
        fd: int,
        sink: Callable[[str], None],
        *,
        chunk_bytes: int = READ_CHUNK_BYTES,
        max_line_bytes: int = MAX_LINE_BYTES,
        progress_interval_s: float | None = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        joined: bool = False,
        coalesce_s: float = COALESCE_S,
    ):
        self.fd = fd
        self._coalesce_s = coalesce_s
        self._joined = joined  # hand all lines of a chunk to `sink` at once, joined with "\n"
        self._sink = sink
        self._chunk = chunk_bytes
        self._splitter = LineSplitter(max_line_bytes)
        self._progress_interval = progress_interval_s
        self._clock = clock
        self._last_progress = clock()
        self._thread: threading.Thread | None = None
        self.bytes_read = 0
        self.lines_read = 0
        self.done = threading.Event()  # set once the pipe reached EOF and every line was handed over

    def start(self, name: str | None = None) -> OutputReader:
        self._thread = threading.Thread(target=self.run, name=name or f"output-reader-{self.fd}", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for EOF; True once the reader has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def run(self) -> None:
        """Read until EOF (blocking). The fd is left open for its owner to close."""
        short = self._chunk // 2
        try:
            while chunk := self._read():
                self.bytes_read += len(chunk)
                if self._joined:
                    self._emit_joined(self._splitter.feed_joined(chunk))
                else:
                    self._emit(self._splitter.feed(chunk))
                self._maybe_emit_progress()
                if len(chunk) < short and self._coalesce_s > 0:
                    time.sleep(self._coalesce_s)  # let a trickle of small writes gather (COALESCE_S)
            self._emit(self._splitter.finish())
        finally:
            self.done.set()

    def _read(self) -> bytes:
        try:
            return os.read(self.fd, self._chunk)
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pty whose other side has closed: end of output
                return b""
            raise

    def _emit(self, lines: Sequence[str]) -> None:
        if self._joined:
            if lines:  # one call per chunk: a chatty task is not slowed by per-line overhead
                self._sink("\n".join(lines))
        else:
            for line in lines:
                self._sink(line)
        self.lines_read += len(lines)

    def _emit_joined(self, text: str | None) -> None:
        if text is not None:
            self._sink(text)
            self.lines_read += text.count("\n") + 1

    def _maybe_emit_progress(self) -> None:
        """Show a long-running \\r progress line now and then, not only when it ends."""
        if self._progress_interval is None or self._clock() - self._last_progress < self._progress_interval:
            return
        current = self._splitter.progress()
        if current is not None:
            self._last_progress = self._clock()
            self._emit([current])
