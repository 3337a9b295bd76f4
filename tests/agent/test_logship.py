from __future__ import annotations

import json
import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.logs.shipper import LineSplitter, LogShipper, OutputReader
from shipyard.errors import ServerError, ServerUnreachable
from shipyard.redact import MASK, Redactor

KIB = 1024


# --- LineSplitter / OutputReader ---------------------------------------------------------------


def feed_all(chunks, **options):
    splitter = LineSplitter(**options)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + splitter.finish()


def test_partial_lines_across_chunks():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == ["hello"]
    assert splitter.feed(b"ld\n\nlast") == ["world", ""]
    assert splitter.finish() == ["last"]
    assert splitter.finish() == []


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_any_chunking_gives_the_same_lines(lines, cuts):
    data = "".join(line + "\n" for line in lines).encode()
    bounds = sorted({0, len(data), *(cut for cut in cuts if cut < len(data))})
    chunks = [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    assert feed_all(chunks) == lines


@settings(max_examples=400, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"ab", b"\n", b"\r", b"\xc3\xa9", b"\xc3", b"\xff", b"xyz" * 5, b"\r\n"]),
                  max_size=60).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
    limit=st.sampled_from([4, 8, 16, 64 * KIB]),
)
def test_joined_feed_is_the_lines_joined(data, cuts, limit):
    """The reader's one-piece path (feed_joined) gives exactly what per-line feeding gives,
    whatever the bytes (\\r rewrites, broken UTF-8, overlong lines) and the chunking."""
    bounds = sorted({0, len(data), *(cut for cut in cuts if cut < len(data))})
    chunks = [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    per_line, joined = LineSplitter(limit), LineSplitter(limit)
    for chunk in chunks:
        lines = per_line.feed(chunk)
        assert joined.feed_joined(chunk) == ("\n".join(lines) if lines else None)
    assert joined.finish() == per_line.finish()


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"progress 10%\rprogress 50%\rprogress 100%\n"], ["progress 100%"]),
        ([b"10%\r", b"20%\r", b"\n"], ["20%"]),
        ([b"\r10%", b"\r20%", b"\r30%\n"], ["30%"]),
        ([b"windows\r\n", b"line\r", b"\n"], ["windows", "line"]),
        ([b"kept\r\r\n"], ["kept"]),
        ([b"a\rb\n", b"c\n"], ["b", "c"]),
        ([b"unterminated\rfinal"], ["final"]),
    ],
)
def test_carriage_returns_keep_what_a_terminal_shows(chunks, expected):
    assert feed_all(chunks) == expected


def test_pending_progress_line_does_not_grow():
    splitter = LineSplitter()
    for i in range(100_000):
        splitter.feed(f"\r{i:6d}/100000 [#####     ]".encode())
    assert len(splitter._pending) < 100
    assert splitter.feed(b"\n") == [" 99999/100000 [#####     ]"]


def test_utf8_split_across_chunks():
    data = "héllo wörld ✓\n".encode()
    assert feed_all([data[i:i + 1] for i in range(len(data))]) == ["héllo wörld ✓"]


def test_binary_garbage_does_not_crash():
    garbage = os.urandom(1 << 20)
    lines = feed_all([garbage[i:i + 4096] for i in range(0, len(garbage), 4096)])
    assert all(isinstance(line, str) for line in lines)
    assert all(len(line.encode()) <= 64 * KIB for line in lines)
    assert any("\ufffd" in line for line in lines)


@pytest.mark.parametrize("unit", ["x", "é", "✓"])
def test_overlong_line_comes_out_in_pieces(unit):
    line = unit * (10 * 1024 * 1024 // len(unit.encode()))
    data = (line + "\nafter\n").encode()
    pieces = feed_all([data[i:i + 64 * KIB] for i in range(0, len(data), 64 * KIB)])
    assert pieces[-1] == "after"
    assert "".join(pieces[:-1]) == line  # split on character boundaries: nothing lost or mangled
    assert all(len(piece.encode()) <= 64 * KIB for piece in pieces)
    assert len(pieces) > 150


def test_overlong_line_in_one_feed():
    line = "y" * (3 * 64 * KIB + 5)
    pieces = feed_all([line.encode() + b"\n"])
    assert [len(piece) for piece in pieces] == [64 * KIB] * 3 + [5]


def read_pipe(write, **options):
    """Run an OutputReader on a pipe while `write(fd)` writes to it; return the lines."""
    read_fd, write_fd = os.pipe()
    lines = []
    reader = OutputReader(read_fd, lines.append, **options).start()
    try:
        write(write_fd)
    finally:
        os.close(write_fd)
    assert reader.join(timeout=30)
    os.close(read_fd)
    return lines, reader


def test_reader_reads_a_pipe_to_eof():
    def write(fd):
        for i in range(1000):
            os.write(fd, f"line {i}\n".encode())
        os.write(fd, b"no newline at the end")

    lines, reader = read_pipe(write)
    assert lines == [f"line {i}" for i in range(1000)] + ["no newline at the end"]
    assert reader.lines_read == 1001


def test_reader_handles_a_10_mb_line():
    big = b"z" * (10 * 1024 * 1024)

    def write(fd):
        with os.fdopen(os.dup(fd), "wb") as out:
            out.write(b"before\n" + big + b"\nafter\n")

    lines, reader = read_pipe(write)
    assert lines[0] == "before" and lines[-1] == "after"
    assert sum(len(line) for line in lines[1:-1]) == len(big)
    assert max(len(line) for line in lines) <= 64 * KIB
    assert reader.bytes_read == len(big) + 14


def test_reader_shows_a_long_progress_line_now_and_then():
    now = [0.0]
    splitter_lines = []
    read_fd, write_fd = os.pipe()
    reader = OutputReader(read_fd, splitter_lines.append, progress_interval_s=10, clock=lambda: now[0])
    os.write(write_fd, b"\rstep 1")
    os.close(write_fd)
    chunk = os.read(read_fd, 100)
    reader._emit(reader._splitter.feed(chunk))
    reader._maybe_emit_progress()
    assert splitter_lines == []  # not yet: the interval hasn't passed
    reader._emit(reader._splitter.feed(b"\rstep 2"))
    now[0] = 11
    reader._maybe_emit_progress()
    assert splitter_lines == ["step 2"]
    reader._emit(reader._splitter.feed(b"\rstep 3\n"))
    assert splitter_lines == ["step 2", "step 3"]
    os.close(read_fd)


# --- LogShipper -------------------------------------------------------------------------------


class Recorder:
    """A send() that records batches, optionally failing for a while first."""

    def __init__(self, fail_times=0, error=None):
        self.batches = []
        self.attempts = 0
        self.fail_times = fail_times
        self.error = error or ServerUnreachable("server is away")
        self.sent = threading.Event()

    def fail(self, attempt):
        return attempt <= self.fail_times

    def __call__(self, events):
        self.attempts += 1
        if self.fail(self.attempts):
            raise self.error
        self.batches.append(events)
        self.sent.set()

    @property
    def events(self):
        return [event for batch in self.batches for event in batch]

    def lines(self):
        return [line for event in self.events for line in event["msg"].split("\n")]


def make_shipper(tmp_path, send, **options):
    options.setdefault("retry_initial_s", 0.01)
    options.setdefault("retry_max_s", 0.05)
    return LogShipper(send, task_id="t1", worker="w:0", spool_path=tmp_path / "t1.spool", **options)


def test_events_have_the_log_shape(tmp_path):
    send = Recorder()
    shipper = make_shipper(tmp_path, send).start()
    before = int(time.time() * 1000)
    shipper.add("hello", level="info")
    report = shipper.close()
    (event,) = send.events
    assert event.keys() == {"type", "task", "timestamp", "level", "worker", "msg"}
    assert (event["type"], event["task"], event["level"], event["worker"], event["msg"]) == (
        "log", "t1", "info", "w:0", "hello"
    )
    assert before <= event["timestamp"] <= int(time.time() * 1000)
    assert report.complete and report.spool_path is None
    assert report.stats.lines_shipped == report.stats.lines_received == 1


def test_flushes_by_age(tmp_path):
    send = Recorder()
    shipper = make_shipper(tmp_path, send, batch_ms=300).start()
    for text in ("a", "b", "c"):
        shipper.add(text)
    assert send.sent.wait(5)
    assert [event["msg"] for event in send.events] == ["a\nb\nc"]  # one batch, one event
    shipper.close()


def test_a_line_added_at_once_ships_with_what_waits_before_it(tmp_path):
    send = Recorder()
    shipper = make_shipper(tmp_path, send, batch_ms=60_000).start()
    shipper.add("note")
    assert not send.sent.wait(0.2)
    shipper.add("the task's first line", at_once=True)
    assert send.sent.wait(5)  # long before the 60 s age limit
    send.sent.clear()
    shipper.add("later")     # batched again
    assert not send.sent.wait(0.2)
    shipper.close()
    assert send.lines() == ["note", "the task's first line", "later"]


def test_flushes_by_size_without_waiting_for_age(tmp_path):
    send = Recorder()
    shipper = make_shipper(tmp_path, send, batch_ms=60_000, batch_bytes=1000).start()
    shipper.add("x" * 600)
    assert not send.sent.wait(0.2)
    shipper.add("y" * 600)
    assert send.sent.wait(5)  # long before the 60 s age limit
    shipper.close()
    assert send.lines() == ["x" * 600, "y" * 600]


def test_levels_and_event_size_split_events(tmp_path):
    send = Recorder()
    shipper = make_shipper(tmp_path, send, batch_ms=60_000, max_event_bytes=25)
    for text, level in [("out 1", "info"), ("out 2", "info"), ("err 1", "error"), ("out 3", "info")]:
        shipper.add(text, level=level)
    shipper.add("\n".join(f"line {i}" for i in range(6)))
    shipper.close()
    # A level change starts a new event; no event holds more than max_event_bytes (text plus one
    # byte per line); lines are cut between, never inside; the order is kept. (Lines added together
    # travel as one block, so where an event is cut between lines is the shipper's choice.)
    assert [(event["level"], event["msg"]) for event in send.events][:3] == [
        ("info", "out 1\nout 2"), ("error", "err 1"), ("info", "out 3")]
    assert all(len(event["msg"]) + event["msg"].count("\n") + 1 <= 25 for event in send.events)
    assert "\n".join(event["msg"] for event in send.events[3:]).split("\n") == [f"line {i}" for i in range(6)]
    stamps = [event["timestamp"] for event in send.events]
    assert stamps == sorted(set(stamps))


def test_timestamps_strictly_increase_even_if_the_clock_steps_back(tmp_path):
    wall = iter([1000.0, 999.0, 998.0, 1000.5, 1000.5])
    send = Recorder()
    shipper = make_shipper(tmp_path, send, batch_bytes=1, wall_clock=lambda: next(wall)).start()
    for i in range(5):
        shipper.add(f"l{i}", level="info" if i % 2 else "error")
    shipper.close()
    stamps = [event["timestamp"] for event in send.events]
    assert all(later > earlier for earlier, later in zip(stamps, stamps[1:], strict=False))
    assert stamps[0] == 1_000_000


def test_outage_loses_nothing_and_keeps_order(tmp_path):
    send = Recorder(fail_times=5)
    shipper = make_shipper(tmp_path, send, batch_ms=5, batch_bytes=200).start()
    expected = [f"line {i:05d}" for i in range(3000)]
    for i, line in enumerate(expected):
        shipper.add(line, level="error" if i % 7 == 0 else "info")
        if i % 100 == 0:
            time.sleep(0.005)
    report = shipper.close(timeout_s=20)
    assert report.complete, report
    assert send.lines() == expected
    stamps = [event["timestamp"] for event in send.events]
    assert all(later > earlier for earlier, later in zip(stamps, stamps[1:], strict=False))
    assert report.stats.lines_spooled > 0
    assert report.stats.send_failures == 5
    assert report.stats.lines_shipped == 3000
    assert not (tmp_path / "t1.spool").exists()


def test_server_errors_5xx_are_retried_like_an_outage(tmp_path):
    send = Recorder(fail_times=2, error=ServerError("boom", code=500, endpoint="events.add_batch"))
    shipper = make_shipper(tmp_path, send).start()
    shipper.add("one")
    shipper.add("two")
    report = shipper.close(timeout_s=10)
    assert report.complete
    assert send.lines() == ["one", "two"]


def test_undeliverable_lines_stay_on_disk_and_are_sent_next_time(tmp_path):
    down = Recorder(fail_times=10**9)
    shipper = make_shipper(tmp_path, down, batch_bytes=10).start()
    for i in range(50):
        shipper.add(f"old {i}")
    report = shipper.close(timeout_s=0.5)
    assert not report.complete
    assert report.lines_undelivered == 50
    assert report.spool_path == tmp_path / "t1.spool"
    spooled = [json.loads(line) for line in report.spool_path.read_text().splitlines()]
    assert [line for record in spooled for event in record["events"] for line in event["msg"].split("\n")] == [
        f"old {i}" for i in range(50)
    ]

    up = Recorder()
    shipper = make_shipper(tmp_path, up).start()
    shipper.add("new")
    report = shipper.close(timeout_s=10)
    assert report.complete
    assert up.lines() == [f"old {i}" for i in range(50)] + ["new"]
    assert not (tmp_path / "t1.spool").exists()


def test_partially_drained_spool_keeps_only_the_rest(tmp_path):
    send = Recorder(fail_times=1)
    shipper = make_shipper(tmp_path, send, batch_bytes=10, retry_initial_s=60).start()
    for i in range(5):
        shipper.add(f"line {i}")
    report = shipper.close(timeout_s=0.3)  # the retry is 60 s away: nothing is resent in time
    assert report.lines_undelivered == 5
    send.fail_times = 0
    shipper = make_shipper(tmp_path, send).start()
    assert shipper.close(timeout_s=10).complete
    assert send.lines() == [f"line {i}" for i in range(5)]


def test_spool_drained_halfway_keeps_exactly_the_rest(tmp_path):
    send = Recorder()
    send.fail = lambda attempt: attempt != 2  # down, one success while draining, down again
    shipper = make_shipper(tmp_path, send, batch_ms=60_000, batch_bytes=1)
    for i in range(5):
        shipper.add(f"line {i}")
    report = shipper.start().close(timeout_s=0.5)
    assert send.lines() == ["line 0"]
    assert report.lines_undelivered == 4
    assert len(report.spool_path.read_text().splitlines()) == 4
    send.fail = lambda attempt: False
    assert make_shipper(tmp_path, send).close(timeout_s=10).complete
    assert send.lines() == [f"line {i}" for i in range(5)]


def test_a_torn_record_in_a_leftover_spool_is_set_aside(tmp_path):
    good = {"lines": 1, "events": [{"type": "log", "task": "t1", "timestamp": 1, "level": "info",
                                    "worker": "w:0", "msg": "from last time"}]}
    (tmp_path / "t1.spool").write_text(json.dumps(good) + '\n{"lines": 2, "eve')
    send = Recorder()
    shipper = make_shipper(tmp_path, send).start()
    shipper.add("new")
    report = shipper.close(timeout_s=10)
    assert send.lines() == ["from last time", "new"]
    assert report.spool_path is None
    assert (tmp_path / "t1.spool.rejected").read_text() == '{"lines": 2, "eve\n'


def test_refused_lines_are_reported(tmp_path):
    send = Recorder(fail_times=1, error=ServerError("events_not_added", code=400, subcode=131))
    shipper = make_shipper(tmp_path, send, batch_bytes=1).start()
    shipper.add("refused")
    shipper.add("accepted")
    report = shipper.close(timeout_s=10)
    assert report.stats.lines_rejected == 1
    assert report.rejected_path == tmp_path / "t1.spool.rejected"
    assert not report.complete
    assert send.lines() == ["accepted"]
    assert json.loads(report.rejected_path.read_text())["events"][0]["msg"] == "refused"


def test_secrets_are_redacted_before_shipping_and_spooling(tmp_path):
    send = Recorder(fail_times=10**9)
    redactor = Redactor(["hunter2-secret"])
    shipper = make_shipper(tmp_path, send, redactor=redactor).start()
    shipper.add("password is hunter2-secret")
    shipper.add("clone https://bob:pw123@github.com/x.git")
    report = shipper.close(timeout_s=0.3)
    text = report.spool_path.read_text()
    assert "hunter2" not in text and "pw123" not in text
    send.fail_times = 0
    assert make_shipper(tmp_path, send).close(timeout_s=10).complete
    assert send.lines() == [f"password is {MASK}", f"clone https://bob:{MASK}@github.com/x.git"]


def test_add_after_close_is_an_error(tmp_path):
    shipper = make_shipper(tmp_path, Recorder()).start()
    shipper.close()
    with pytest.raises(RuntimeError):
        shipper.add("late")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_crashing_sender_is_reported_and_lines_kept(tmp_path):
    send = Recorder(fail_times=10**9, error=TypeError("bug in send"))
    shipper = make_shipper(tmp_path, send, batch_ms=60_000).start()
    shipper.add("first")
    shipper.add("x" * 300_000)  # over batch_bytes: flushed now, and the sender blows up
    deadline = time.monotonic() + 5
    while shipper._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    shipper.add("after the crash")
    report = shipper.close(timeout_s=1)
    assert "bug in send" in report.error
    assert not report.complete
    assert report.lines_undelivered == 3  # the batch in flight and the line added after the crash
    spooled = [json.loads(line) for line in report.spool_path.read_text().splitlines()]
    assert [event["msg"][:5] for record in spooled for event in record["events"]] == ["first", "xxxxx", "after"]


def test_throughput_pipe_to_shipper(tmp_path, capsys):
    send = Recorder()
    shipper = make_shipper(tmp_path, send).start()
    read_fd, write_fd = os.pipe()
    reader = OutputReader(read_fd, shipper.add).start()
    payload = b"".join(b"epoch %d step %d loss 0.%06d\n" % (i // 1000, i, i) for i in range(200_000))
    started = time.perf_counter()
    with os.fdopen(write_fd, "wb") as out:
        out.write(payload)
    assert reader.join(timeout=60)
    os.close(read_fd)
    report = shipper.close(timeout_s=30)
    elapsed = time.perf_counter() - started
    assert report.complete
    assert report.stats.lines_shipped == 200_000
    assert len(send.lines()) == 200_000
    with capsys.disabled():
        print(f"\n  logship: 200k lines, {len(payload) / 1e6:.1f} MB in {elapsed:.2f}s, {len(send.batches)} batches")
