"""Docker mode next to venv mode, in one run, warm caches: how long until the task's first line.

* start -> first line: the agent's first log line for the task ("pulled from queue") to the
  moment the task's own code prints (its wall clock: the container shares the host's clock).
  In docker mode this covers checkout, image lookup, container create + start, the init process
  and the interpreter's start-up. Target: < 1.5 s.
* pickup: enqueue -> first line, i.e. the above plus the claim.

    python bench/bench_docker.py [--runs 10] [--image shipyard-test/python:bookworm]

Starts its own server and two daemons (one `--docker IMAGE`) in a temp dir; needs a running
Docker engine and the image (scripts/start-dockerd.sh, scripts/build-base-image.sh).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agent_helpers import agent_env, start_daemon, task_log, wait_status  # noqa: E402
from tests.helpers import start_server  # noqa: E402

SCRIPT = {"repository": "", "entry_point": "first.py", "requirements": {"pip": "six==1.16.0\n"},
          "diff": "import time\nprint('FIRST-LINE', repr(time.time()), flush=True)\n"}


def one_run(api, queue: str, name: str) -> tuple[float, float]:
    task = api.call("tasks.create", {"name": name, "type": "training", "script": SCRIPT})["id"]
    enqueued = time.time()
    api.call("tasks.enqueue", {"task": task, "queue_name": queue})
    doc = wait_status(api, task, timeout=600)
    assert doc["status"] == "completed", doc.get("status_reason")
    events = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc",
                                                 "batch_size": 1000})["events"]
    started = events[0]["timestamp"] / 1000  # the first line of the run: "task ... pulled from queue"
    first = next(float(line.split()[1]) for line in task_log(api, task) if line.startswith("FIRST-LINE"))
    return (first - started) * 1000, (first - enqueued) * 1000


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    return f"{statistics.median(ordered):.0f} / {ordered[int(0.9 * (len(ordered) - 1))]:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default="shipyard-test/python:bookworm")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = start_server(root / "server")
        tag = uuid.uuid4().hex[:6]
        daemons = {
            "venv": start_daemon(agent_env(server, root, SHIPYARD_LONG_POLL_S="30",
                                           CLEARML_WORKER_ID=f"bench-venv-{tag}:0"), ["bench-venv"], root / "venv.log"),
            "docker": start_daemon(agent_env(server, root, SHIPYARD_LONG_POLL_S="30",
                                             CLEARML_WORKER_ID=f"bench-docker-{tag}:0"),
                                   ["bench-docker"], root / "docker.log", "--docker", args.image),
        }
        api = server.api()
        results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in daemons}
        try:
            for mode in daemons:  # warm: the environment is built once per mode
                one_run(api, f"bench-{mode}", f"warm-{mode}")
            for i in range(args.runs):
                for mode in daemons:  # interleaved, so both modes see the same machine
                    results[mode].append(one_run(api, f"bench-{mode}", f"{mode}-{i}"))
        finally:
            for daemon in daemons.values():
                daemon.stop()
            server.stop()
    print("| mode | start -> first line, p50 / p90 | enqueue -> first line, p50 / p90 | runs |\n|---|---|---|---|")
    for mode, samples in results.items():
        print(f"| {mode} | {summary([s for s, _ in samples])} | {summary([p for _, p in samples])} | {len(samples)} |")
    docker_p50 = statistics.median(s for s, _ in results["docker"])
    print(f"\ndocker start -> first line p50 {docker_p50:.0f} ms: {'within' if docker_p50 < 1500 else 'OVER'} "
          "the 1.5 s target")


if __name__ == "__main__":
    main()
