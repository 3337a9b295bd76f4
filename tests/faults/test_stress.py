"""Many agents, many tasks, random kill -9s: every task ends, none completes twice."""
from __future__ import annotations

import os
import random
import time

from tests.faults.common import faulty_agent, kill9, overlapping_runs, run_recording_task, runs, script
from tests.faults.conftest import record
from tests.helpers import start_server

AGENTS = int(os.environ.get("SHIPYARD_FAULT_AGENTS", "8"))
TASKS = int(os.environ.get("SHIPYARD_FAULT_TASKS", "500"))
FINAL = {"completed", "failed", "stopped"}


def test_agents_killed_at_random_under_load(tmp_path, runs_dir):
    server = start_server(tmp_path / "server", env={"SHIPYARD_REAPER_INTERVAL_S": "0.5",
                                                    "SHIPYARD_LEASE_MAX_ATTEMPTS": "10"})
    api = server.api()
    rng = random.Random(1234)
    code = script(run_recording_task(runs_dir, 0.05))
    queue = api.call("queues.create", {"name": "stress"})["id"]
    tasks = []
    for i in range(TASKS):
        task = api.call("tasks.create", {"name": f"s{i}", "type": "training", "script": code})["id"]
        api.call("tasks.enqueue", {"task": task, "queue": queue})
        tasks.append(task)
    agents = [faulty_agent(server, tmp_path, "stress", f"agent-{i}") for i in range(AGENTS)]
    spawned, kills = AGENTS, 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < 900:
            rows = api.call("tasks.get_all", {"id": tasks, "only_fields": ["status"]})["tasks"]
            if all(r["status"] in FINAL for r in rows):
                break
            time.sleep(2.5)
            victim = rng.randrange(len(agents))
            kill9(agents[victim])
            kills += 1
            agents[victim] = faulty_agent(server, tmp_path, "stress", f"agent-{spawned}")
            spawned += 1
        elapsed = time.monotonic() - started
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
    server = start_server(tmp_path / "server", ports=server.ports)
    try:
        rows = {r["id"]: r for r in server.api().call("tasks.get_all", {"id": tasks})["tasks"]}
    finally:
        server.stop()
    ended = [t for t in tasks if rows[t]["status"] in FINAL]
    completed = [t for t in tasks if rows[t]["status"] == "completed"]
    twice = [t for t in tasks if runs(runs_dir, t)[1] > 1]
    retried = sum(1 for t in tasks if len(rows[t].get("shipyard_attempts") or []) > 1)
    record(f"{AGENTS} agents x {TASKS} tasks, {kills} random kill -9", TASKS, TASKS - len(ended), len(twice),
           retried, elapsed)
    assert len(ended) == TASKS, f"{TASKS - len(ended)} tasks never reached an end state"
    # One owner at a time: no two runs of a task were ever alive together.
    assert not [t for t in tasks if overlapping_runs(runs_dir, t)]
    # The server never records two completions of one task.
    for task in completed:
        ends = [a.get("end", "") for a in rows[task].get("shipyard_attempts") or []]
        assert sum(e.startswith("completed") for e in ends) <= 1, rows[task]["shipyard_attempts"]
    # A task's process can only have finished twice if its first agent was killed in the instant
    # between the process's exit and the agent's tasks.record_exit (counted in the table above).
    for task in twice:
        attempts = rows[task].get("shipyard_attempts") or []
        assert len(attempts) >= 2 and attempts[0].get("end", "").startswith("infrastructure"), attempts
    failed = [rows[t]["status_reason"] for t in tasks if rows[t]["status"] != "completed"]
    assert all(reason.startswith("infrastructure") for reason in failed), failed[:3]
