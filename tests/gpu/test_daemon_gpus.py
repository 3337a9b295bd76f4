"""The daemon with GPU slots end to end, on a fake NVML inventory of 4 GPUs (SHIPYARD_FAKE_GPUS):
tasks get disjoint GPU sets sized by their queue, run side by side, and free them at the end."""
from __future__ import annotations

import itertools
import json

from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.helpers import start_server

PROBE = ("import json, os, time\nstart = time.time()\ntime.sleep(2.5)\n"
         "print('GPU-PROBE ' + json.dumps({'cuda': os.environ.get('CUDA_VISIBLE_DEVICES'), "
         "'order': os.environ.get('CUDA_DEVICE_ORDER'), 'start': start, 'end': time.time()}))\n")


def _probe(api, task: str) -> dict:
    line = next(line for line in task_log(api, task) if line.startswith("GPU-PROBE "))
    return json.loads(line[len("GPU-PROBE "):])


def test_dynamic_gpu_slots(tmp_path):
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="4")
    daemon = start_daemon(env, [], tmp_path / "d.log", "--gpus", "0-3", "--queue", "dual=2", "single=1")
    try:
        script = {"repository": "", "entry_point": "p.py", "diff": PROBE}
        tasks = {name: [create_task(api, f"{name}-{i}", script, queue=name) for i in range(2)]
                 for name in ("dual", "single")}
        probes = {}
        for name, ids in tasks.items():
            for task in ids:
                doc = wait_status(api, task, timeout=120)
                assert doc["status"] == "completed", doc["status_reason"]
                probes[task] = (name, _probe(api, task))
    finally:
        daemon.stop()
        server.stop()
    for name, probe in probes.values():
        devices = probe["cuda"].split(",")
        assert len(devices) == (2 if name == "dual" else 1) and probe["order"] == "PCI_BUS_ID"
    for (_, a), (_, b) in itertools.combinations(probes.values(), 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:   # ran at the same time
            assert not set(a["cuda"].split(",")) & set(b["cuda"].split(",")), (a, b)
    overlapping = sum(1 for (_, a), (_, b) in itertools.combinations(probes.values(), 2)
                      if a["start"] < b["end"] and b["start"] < a["end"])
    assert overlapping >= 1  # the box was shared, not run one task at a time


def test_cpu_only_hides_gpus(tmp_path):
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="2")
    daemon = start_daemon(env, ["cpu"], tmp_path / "d.log", "--cpu-only")
    try:
        task = create_task(api, "cpu", {"repository": "", "entry_point": "p.py", "diff": PROBE}, queue="cpu")
        assert wait_status(api, task, timeout=120)["status"] == "completed"
        assert _probe(api, task)["cuda"] == ""
    finally:
        daemon.stop()
        server.stop()
