"""Slurm glue benchmarks on a local single-machine cluster (tests/slurm_cluster.py):

* pickup: enqueue -> the task's first line of output, through `shipyard slurm` (claim, sbatch,
  Slurm's start, `shipyard execute` on the node), p50/p90 - beside a bare sbatch job's start
  (submit -> the job's first command runs) and `shipyard daemon` on the same machine, same run
* hand-over: N queued tasks handed to Slurm (jobs accepted by slurmctld) per second, beside a bare
  `sbatch` loop's submissions per second (the floor the target is set against: the mean of a loop
  right before and one right after the glue's) and the same N submissions from 8 threads (what slurmctld takes at most from one client); all into a partition
  that is DOWN, so nothing starts

* node: a glue job's `shipyard execute --id T --attempt N` alone (a leased claim, no Slurm):
  process start -> the task's first line, and the CPU the whole run took, beside a bare
  `python -c` process printing the time in the same run (`--node-only`)

    python bench/bench_slurm.py [--runs 10] [--tasks 1000] [--skip-pickup | --pickup-only | --node-only]

Needs root and Debian's slurm-wlm + munge (scripts/start-slurm.sh). Starts its own server,
cluster, glue and daemon in a temp dir.
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.agent_helpers import agent_env, start_daemon, wait_status  # noqa: E402
from tests.helpers import start_server  # noqa: E402
from tests.slurm_cluster import SlurmCluster  # noqa: E402

SCRIPT = {"repository": "", "entry_point": "hello.py", "diff": "print('PICKUP-MARKER', flush=True)\n"}


def first_line_ms(api, task: str, enqueued_ms: int) -> float:
    events = api.call("events.get_task_events", {"task": task, "event_type": "log", "order": "asc",
                                                 "batch_size": 1000})["events"]
    for event in events:
        if "PICKUP-MARKER" in str(event.get("msg", "")):
            return event["timestamp"] - enqueued_ms
    raise RuntimeError(f"task {task}: marker line not found")


def pickup(api, queue: str, runs: int) -> list[float]:
    samples = []
    for i in range(runs + 1):          # the first run warms the env cache
        task = api.call("tasks.create", {"name": f"{queue}-{i}", "type": "training", "script": SCRIPT})["id"]
        time.sleep(0.3)
        enqueued_ms = int(time.time() * 1000)
        api.call("tasks.enqueue", {"task": task, "queue_name": queue})
        doc = wait_status(api, task, timeout=180)
        if doc["status"] != "completed":
            raise RuntimeError(f"task {task} {doc['status']}: {doc.get('status_reason')}")
        if i:
            samples.append(first_line_ms(api, task, enqueued_ms))
    return samples


def bare_sbatch_start(cluster: SlurmCluster, out: Path, runs: int) -> list[float]:
    """submit -> the job's first command prints the time (the same partition, no Shipyard)."""
    samples = []
    for i in range(runs):
        path = out / f"bare-{i}.out"
        before = time.time()
        cluster.run("sbatch", "--parsable", "-p", "batch", f"--output={path}", "--wrap",
                    f"{sys.executable} -c 'import time; print(time.time())'")
        deadline = time.monotonic() + 60
        while not (path.exists() and path.read_text().strip()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"bare job {i} never started")
            time.sleep(0.02)
        samples.append((float(path.read_text().split()[0]) - before) * 1000)
        time.sleep(0.3)
    return samples


def bare_sbatch_rate(cluster: SlurmCluster, count: int, threads: int = 1) -> float:
    from concurrent.futures import ThreadPoolExecutor

    def submit(_i: int) -> None:
        cluster.run("sbatch", "--parsable", "-p", "hold", "-o", "/dev/null", "--wrap", "true")

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(submit, range(count)))
    rate = count / (time.monotonic() - started)
    cluster.run("scancel", "-p", "hold", check=False)
    return rate


def jobs_in(cluster: SlurmCluster, partition: str) -> int:
    return len(cluster.run("squeue", "-h", "-p", partition, "-o", "%i", check=False).stdout.split())


def jobs_submitted(cluster: SlurmCluster) -> int:
    """slurmctld's own count of accepted submissions (`sdiag`): a cheap call, unlike listing a
    thousand jobs with squeue ten times a second while the glue submits (which slowed slurmctld
    for the glue and not for the bare loop it is compared with)."""
    found = re.search(r"Jobs submitted:\s+(\d+)", cluster.run("sdiag", check=False).stdout)
    if found is None:
        raise RuntimeError("sdiag gave no 'Jobs submitted' count")
    return int(found.group(1))


def glue_rate(api, cluster: SlurmCluster, env: dict, root: Path, count: int) -> float:
    """Enqueue `count` tasks, then start a glue on them: tasks handed to slurmctld per second."""
    api.call("queues.create", {"name": "flood"})
    for i in range(count):
        task = api.call("tasks.create", {"name": f"flood-{i}", "type": "training", "script": SCRIPT})["id"]
        api.call("tasks.enqueue", {"task": task, "queue_name": "flood"})
    log = root / "glue-flood.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shipyard", "slurm", "--queue", "flood", "--partition", "hold",
                                 "--output-dir", str(root / "flood-out"), "--max-jobs", str(count + 10)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while "handing" not in log.read_text(errors="replace"):
            time.sleep(0.02)
        started, before = time.monotonic(), jobs_submitted(cluster)
        while jobs_submitted(cluster) - before < count:
            if proc.poll() is not None or time.monotonic() - started > 600:
                raise RuntimeError(f"the glue stopped or stalled:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        if jobs_in(cluster, "hold") < count:
            raise RuntimeError("slurmctld counted the submissions but squeue does not list them all")
        return count / elapsed
    finally:
        proc.terminate()
        proc.wait(60)
        cluster.run("scancel", "-p", "hold", check=False)


def node_start(api, env: dict, runs: int) -> tuple[list[float], list[float], list[float]]:
    """(process start -> first line ms, CPU ms of the whole run, bare `python -c` start -> print ms)."""
    import resource

    queue = api.call("queues.create", {"name": "node-bench"})["id"]
    first, cpu, bare = [], [], []
    for i in range(runs + 1):          # the first run warms the env cache
        task = api.call("tasks.create", {"name": f"node-{i}", "type": "training", "script": SCRIPT})["id"]
        api.call("tasks.enqueue", {"task": task, "queue": queue})
        attempt = api.call("queues.get_next_task", {"queue": queue, "lease_s": 60, "worker": "node-bench"})[
            "lease"]["attempt"]
        started, used = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "shipyard", "execute", "--id", task, "--attempt", str(attempt)],
                       env=env, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = time.time()
        printed = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], check=True,
                                 capture_output=True, text=True).stdout
        if i:
            first.append(first_line_ms(api, task, int(started * 1000)))
            cpu.append((after.ru_utime - used.ru_utime + after.ru_stime - used.ru_stime) * 1000)
            bare.append((float(printed) - before) * 1000)
    return first, cpu, bare


def run_pickup(api, cluster: SlurmCluster, env: dict, root: Path, runs: int) -> None:
    glue_log = root / "glue.log"
    with open(glue_log, "ab") as out:
        glue = subprocess.Popen([sys.executable, "-m", "shipyard", "slurm", "--queue", "slurm-bench",
                                 "--partition", "batch", "--output-dir", str(root / "out"), "--mem", "1024",
                                 "--node-command", f"{sys.executable} -m shipyard"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    daemon = start_daemon(env, ["daemon-bench"], root / "daemon.log")
    try:
        results = {
            "bare sbatch job start": bare_sbatch_start(cluster, root, runs),
            "shipyard slurm: enqueue -> first line": pickup(api, "slurm-bench", runs),
            "shipyard daemon: enqueue -> first line": pickup(api, "daemon-bench", runs),
        }
    finally:
        glue.terminate()
        glue.wait(60)
        daemon.stop()
    for name, samples in results.items():
        q = statistics.quantiles(samples, n=10)
        print(f"{name}: p50 {statistics.median(samples):.0f} ms, p90 {q[-1]:.0f} ms ({len(samples)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--skip-pickup", action="store_true", help="only the hand-over rate")
    parser.add_argument("--node-only", action="store_true", help="only the node's `shipyard execute` start")
    parser.add_argument("--pickup-only", action="store_true", help="only enqueue -> first line (no hand-over)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        if args.node_only:
            server = start_server(root / "server")
            first, cpu, bare = node_start(server.api(), agent_env(server, root, PYTHONPATH=str(Path.cwd())), args.runs)
            print(f"shipyard execute --attempt: process start -> first line p50 {statistics.median(first):.0f} ms "
                  f"(min {min(first):.0f}), CPU of the whole run p50 {statistics.median(cpu):.0f} ms "
                  f"({args.runs} runs); bare python -c start -> print p50 {statistics.median(bare):.0f} ms")
            server.stop()
            return
        cluster = SlurmCluster.start(root / "cluster", gpus=0, memory_mb=4096)
        server = start_server(root / "server")
        api = server.api()
        for name in ("slurm-bench", "daemon-bench"):
            api.call("queues.create", {"name": name})
        env = agent_env(server, root, **cluster.env, PYTHONPATH=str(Path.cwd()))
        if not args.skip_pickup:
            run_pickup(api, cluster, env, root, args.runs)
        if args.pickup_only:
            cluster.stop()
            server.stop()
            return
        before = bare_sbatch_rate(cluster, args.tasks)
        glued = glue_rate(api, cluster, env, root, args.tasks)
        after = bare_sbatch_rate(cluster, args.tasks)
        parallel = bare_sbatch_rate(cluster, args.tasks, threads=8)
        bare = (before + after) / 2   # the floor on both sides of the glue: a shared machine's load drifts
        print(f"bare sbatch loop: {bare:.1f} submissions/s ({args.tasks} jobs; {before:.1f} before the glue, "
              f"{after:.1f} after); from 8 threads: {parallel:.1f}/s")
        print(f"shipyard slurm hand-over: {glued:.1f} tasks/s ({args.tasks} queued tasks) = {glued / bare:.2f}x")
        cluster.stop()
        server.stop()



if __name__ == "__main__":
    main()
