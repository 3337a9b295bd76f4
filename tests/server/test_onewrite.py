"""server/rpc/onewrite.py: a response's head and body, written in one loop pass, leave as one write."""
from __future__ import annotations

import asyncio

from server.rpc.onewrite import SMALL, GatheredTransport
from tests.helpers import run_async


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def _run(scenario) -> _Recorder:
    async def main() -> _Recorder:
        sent = _Recorder()
        await scenario(GatheredTransport(sent, asyncio.get_running_loop()), sent)  # type: ignore[arg-type]
        return sent
    return run_async(main)   # not asyncio.run: a Playwright session earlier in the worker keeps a loop running


def test_the_writes_of_one_loop_pass_leave_as_one_in_order():
    async def scenario(gathered, sent):
        gathered.write(b"HTTP/1.1 200 OK\r\n\r\n")
        gathered.write(b"{}")
        assert sent.writes == []  # nothing yet: sent at the end of the pass
        await asyncio.sleep(0)
        assert sent.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        gathered.write(b"next")
        await asyncio.sleep(0)
        assert sent.writes[-1] == b"next"
        assert gathered.get_extra_info("peername") == "info:peername"  # the rest is the transport's

    _run(scenario)


def test_a_large_write_goes_at_once_after_what_was_kept_and_close_sends_first():
    big = b"x" * (SMALL + 1)

    async def scenario(gathered, sent):
        gathered.write(b"head")
        gathered.write(big)
        assert sent.writes == [b"head", big]
        gathered.write(b"last words")
        gathered.close()
        assert sent.writes[-1] == b"last words" and sent.closed
        await asyncio.sleep(0)  # the scheduled send finds nothing left
        assert len(sent.writes) == 3

    _run(scenario)


def test_abort_drops_what_was_kept():
    async def scenario(gathered, sent):
        gathered.write(b"never")
        gathered.abort()
        await asyncio.sleep(0)
        assert sent.writes == [] and sent.aborted

    _run(scenario)
