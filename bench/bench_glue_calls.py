"""What a flood costs the server: the glue hands N queued tasks to an in-memory engine, and every
call it makes to an in-memory task server is counted by endpoint (in-process, no Slurm, seconds).

    PYTHONPATH=$PWD python3 bench/bench_glue_calls.py [--tasks 1000] [--lease-s 60 --hold-s 10]

`--hold-s` keeps the glue watching that long after the last submit (default: 2.5 watches, for the
pending reasons); with a short `--lease-s` the jobs' lease renewals (every quarter of it) show.

The in-memory server does not send the task's document with a claim (`with_task`), so
`tasks.get_by_id` shows once per task here; the real server saves that call.
"""
from __future__ import annotations

import argparse
import collections
import threading
import time

from agent.execution.taskkey import TaskKeys
from agent.glue.loop import GlueLoop
from agent.glue.memory import MemoryEngine
from agent.glue.request import GlueSettings, QueueSpec
from agent.taskserver.memory import InMemoryTaskServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--lease-s", type=float, default=None, help="the glue's lease (default: its setting)")
    parser.add_argument("--hold-s", type=float, default=None, help="watch this long after the last submit")
    args = parser.parse_args()
    api = InMemoryTaskServer()
    queue = api.call("queues.create", {"name": "gpu"})["id"]
    for i in range(args.tasks):
        task = api.call("tasks.create", {"name": f"t{i}", "type": "training"})["id"]
        api.call("tasks.enqueue", {"task": task, "queue": queue})
    api.calls.clear()
    engine, stop = MemoryEngine(), threading.Event()
    lease = {} if args.lease_s is None else {"lease_s": args.lease_s}
    settings = GlueSettings(queues=(QueueSpec("gpu", gpus=0),), worker="glue:calls", max_jobs=args.tasks + 10,
                            **lease)
    loop = GlueLoop(api, engine, settings, stop=stop, task_keys=TaskKeys(api, ("key", "secret")))
    thread = threading.Thread(target=loop.work, daemon=True)
    thread.start()
    started = time.monotonic()
    while len(engine.submitted) < args.tasks and time.monotonic() - started < 300:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    time.sleep(2.5 * settings.watch_s if args.hold_s is None else args.hold_s)   # the pending reasons are written
    stop.set()
    thread.join(60)
    counts = collections.Counter(endpoint for endpoint, _body in api.calls)
    print(f"{len(engine.submitted)} tasks handed over in {elapsed:.1f} s; {sum(counts.values())} server calls")
    for endpoint, count in counts.most_common():
        print(f"{count:8d}  {endpoint}")


if __name__ == "__main__":
    main()
