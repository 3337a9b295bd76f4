"""Right-sized packing: the pure placement (hypothesis: never over-committed), clones inheriting
the parent's measured peak as their request, and end to end three small clones sharing one fake
GPU while a task that outgrows its request is handed back and re-run alone."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.gpus.packing import PackedGpus, Room, fits, hints, place, request_of, usage_line
from tests.agent_helpers import agent_env, create_task, run_cli, start_daemon, task_log, wait_status
from tests.helpers import start_server

# -- the pure decision ------------------------------------------------------------------------


@pytest.mark.parametrize(("rooms", "asked", "expected"), [
    ([Room(0, 80_000, 0)], 20_000, 0),
    ([Room(0, 80_000, 60_000)], 20_000, None),                     # 60 + 20 + margin 1 > 80
    ([Room(0, 80_000, 58_000)], 20_000, 0),                        # 58 + 20 + 1 <= 80
    ([Room(0, 80_000, 10_000), Room(1, 80_000, 40_000)], 20_000, 1),   # best fit: the fuller one
    ([Room(0, 24_000, 0), Room(1, 80_000, 0)], 20_000, 0),         # the smaller GPU it fits
    ([Room(0, 80_000, 0)], 0, None),                               # no request: never packed
    ([], 1, None),
])
def test_place_table(rooms, asked, expected):
    assert place(rooms, asked, 1_000) == expected


@settings(max_examples=150, deadline=None)
@given(totals=st.lists(st.integers(1_000, 100_000), min_size=1, max_size=4),
       steps=st.lists(st.tuples(st.booleans(), st.integers(1, 90_000)), max_size=40),
       margin=st.integers(0, 4_000))
def test_packing_never_over_commits(totals, steps, margin):
    packed = PackedGpus(margin)
    members = []
    free = list(range(len(totals)))
    for join, request in steps:
        if join:
            member = packed.join(request)
            if member is None and free and request + margin <= totals[free[0]]:
                gpu = free.pop(0)
                member = packed.open(gpu, totals[gpu], host=gpu, request_mb=request)
            if member is not None:
                members.append(member)
        elif members:
            host = packed.leave(members.pop(request % len(members)))
            if host is not None:
                free.append(host)
        for room in packed.rooms():
            assert room.committed_mb + margin <= room.total_mb
        assert set(free).isdisjoint(packed.shared)     # a GPU goes back only once its last member left


def test_request_and_hints():
    assert request_of({"runtime": {"gpu_memory_request_mb": "2048"}}) == 2048
    assert request_of({"runtime": {"gpu_memory_request_mb": 2048, "gpu_request_exceeded_mb": 3000}}) is None
    assert request_of({"runtime": {}}) is None and request_of({}) is None
    env = hints(20_000, 80_000)
    assert env["SHIPYARD_GPU_MEMORY_FRACTION"] == "0.250" and env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.250"
    assert "expandable_segments" in env["PYTORCH_CUDA_ALLOC_CONF"]
    assert fits(Room(0, 10, 0), 9, 1) and not fits(Room(0, 10, 1), 9, 1)
    assert usage_line({}) is None
    assert usage_line({"gpu_memory_request_mb": 20_000, "gpu_memory_peak_mb": 3_000}) == \
        "request 20000 MB, measured peak 3000 MB (request far above use: 6.7x)"
    assert usage_line({"gpu_memory_request_mb": 4_000, "gpu_memory_peak_mb": 3_000}) == \
        "request 4000 MB, measured peak 3000 MB"
    assert usage_line({"gpu_memory_peak_mb": 3_000}) == "no request (whole GPUs), measured peak 3000 MB"


# -- end to end -------------------------------------------------------------------------------
SMALL = ("import json, os, time\nstart = time.time()\ntime.sleep(4)\n"
         "print('PACK ' + json.dumps({'cuda': os.environ['CUDA_VISIBLE_DEVICES'], 'start': start, 'end': time.time(), "
         "'request': os.environ.get('SHIPYARD_GPU_MEMORY_REQUEST_MB')}))\n")


def _probe(api, task: str) -> dict:
    line = next(line for line in task_log(api, task) if line.startswith("PACK "))
    return json.loads(line[len("PACK "):])


def test_three_clones_share_one_gpu(tmp_path):
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="1", SHIPYARD_STATUS_REPORT_S="1")
    daemon = start_daemon(env, [], tmp_path / "d.log", "--gpus", "0", "--queue", "q=1")
    try:
        parent = create_task(api, "parent", {"repository": "", "entry_point": "p.py", "diff": SMALL},
                             runtime={"gpu_memory_peak_mb": 20_000})   # as the agent measured it
        clones = [api.call("tasks.clone", {"task": parent, "new_task_name": f"trial-{i}"})["id"] for i in range(3)]
        assert api.call("tasks.get_by_id", {"task": clones[0]})["task"]["runtime"] == {"gpu_memory_request_mb": 20_000}
        for clone in clones:
            api.call("tasks.enqueue", {"task": clone, "queue_name": "q"})
        probes = []
        for clone in clones:
            doc = wait_status(api, clone, timeout=120)
            assert doc["status"] == "completed", doc["status_reason"]
            probes.append(_probe(api, clone))
        assert "gpu memory   request 20000 MB" in run_cli(env, "task", "show", clones[0])
    finally:
        daemon.stop()
        server.stop()
    assert {p["cuda"] for p in probes} == {"0"} and {p["request"] for p in probes} == {"20000"}
    assert max(p["start"] for p in probes) < min(p["end"] for p in probes)   # all three at once on GPU 0


GREEDY = ("import os, time\nopen({procs!r}, 'a').write(f'{{os.getpid()}} 0 25000 80\\n')\n"
          "print('request', os.environ.get('SHIPYARD_GPU_MEMORY_REQUEST_MB'), flush=True)\ntime.sleep(4)\n")


@pytest.mark.nightly
def test_task_over_its_request_is_rerun_alone(tmp_path):
    procs = tmp_path / "procs.txt"
    procs.write_text("")
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="1", SHIPYARD_STATUS_REPORT_S="0.5",
                    SHIPYARD_FAKE_GPU_PROCS=str(procs))
    daemon = start_daemon(env, [], tmp_path / "d.log", "--gpus", "0", "--queue", "q=1")
    try:
        task = create_task(api, "greedy", {"repository": "", "entry_point": "p.py",
                                           "diff": GREEDY.format(procs=str(procs))},
                           queue="q", runtime={"gpu_memory_request_mb": 20_000})
        doc = wait_status(api, task, timeout=120)
        lines = task_log(api, task)
    finally:
        daemon.stop()
        server.stop()
    assert doc["status"] == "completed", doc["status_reason"]
    assert doc["runtime"]["gpu_request_exceeded_mb"] == 25_000
    assert any("GPU out of memory budget: the task used 25000 MB" in line for line in lines)
    assert lines.count("request 20000") == 1 and lines.count("request None") == 1   # the second run alone


OOM = ("import os, sys\nrequest = os.environ.get('SHIPYARD_GPU_MEMORY_REQUEST_MB')\nprint('request', request, flush=True)\n"
       "if request:\n    sys.exit('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB')\n")


@pytest.mark.nightly
def test_packed_task_that_runs_out_of_gpu_memory_is_rerun_alone(tmp_path):
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="1")
    daemon = start_daemon(env, [], tmp_path / "d.log", "--gpus", "0", "--queue", "q=1")
    try:
        task = create_task(api, "oom", {"repository": "", "entry_point": "p.py", "diff": OOM},
                           queue="q", runtime={"gpu_memory_request_mb": 4_000})
        doc = wait_status(api, task, timeout=120)
        lines = task_log(api, task)
    finally:
        daemon.stop()
        server.stop()
    assert doc["status"] == "completed", doc["status_reason"]
    assert doc["runtime"]["gpu_request_exceeded_mb"] == 4_000
    assert any("GPU out of memory on a shared GPU: the task needs more than its request of 4000 MB" in line
               for line in lines)
    assert lines.count("request 4000") == 1 and lines.count("request None") == 1
