"""The handler pool's ingest share (server/rpc/offload.py): a burst of event batches holds at
most half of the workers, so a read arriving behind it runs at once."""
from __future__ import annotations

import asyncio
import threading

from server.rpc.offload import HandlerPool
from tests.helpers import run_async


def test_a_burst_of_ingest_calls_leaves_workers_for_reads():
    pool = HandlerPool(8)
    assert pool.ingest_threads == 4
    release = threading.Event()
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def batch(n: int) -> int:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        release.wait(10)
        with lock:
            state["now"] -= 1
        return n

    async def scenario() -> None:
        burst = [asyncio.ensure_future(pool.run(batch, n, owner=f"reporter-{n}", ingest=True)) for n in range(20)]
        await asyncio.sleep(0.2)
        # the read runs while every ingest thread is busy and 16 batches wait their turn
        assert await asyncio.wait_for(pool.run(lambda: "task"), 2) == "task"
        assert state == {"now": 4, "most": 4}
        release.set()
        assert await asyncio.gather(*burst) == list(range(20))

    run_async(scenario)
    assert state["most"] == 4
    assert pool.close(grace_s=2)
    assert HandlerPool(8, ingest_threads=3).ingest_threads == 3  # config ingest_threads
    assert HandlerPool(2).ingest_threads == 1
