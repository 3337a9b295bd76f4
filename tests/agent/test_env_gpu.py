"""The daemon end to end with a local package index: the torch build for the (fake) GPU's CUDA,
a private index with credentials, and an index that refuses them. No network, no GPU."""
from __future__ import annotations

import json

import pytest

from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.helpers import start_server
from tests.package_index import PackageIndex

QUEUE = "gpu-env"
PASSWORD = "s3cretIndexPw"
PRINT_TORCH = "import torch; print('torch version', torch.__version__)\n"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("env-gpu")
    index = PackageIndex(root / "index", private=("/private/",), user="reader", password=PASSWORD).start()
    for variant in ("cu118", "cu121", "cu124", "cpu"):
        index.add_wheel(variant, "torch", f"2.5.0+{variant}")
    index.add_wheel("private", "shipyard-private-pkg", "1.0")
    locked = PackageIndex(root / "locked", private=("/private/",), user="other", password="unknown").start()
    locked.add_wheel("private", "shipyard-locked-pkg", "1.0")
    server = start_server(root / "server")
    env = agent_env(
        server, root, SHIPYARD_FAKE_GPUS="1", SHIPYARD_FAKE_CUDA="12.2",
        SHIPYARD_TORCH_INDEXES=json.dumps({v: index.url(v) for v in ("cu118", "cu121", "cu124", "cpu")}),
        SHIPYARD_EXTRA_INDEX_URLS=json.dumps([index.url("private")]),
        SHIPYARD_INDEX_CREDENTIALS=json.dumps([{"host": index.host, "user": "reader", "password": PASSWORD}]),
    )
    daemon = start_daemon(env, [QUEUE], root / "daemon.log")
    yield {"api": server.api(), "locked": locked, "root": root, "daemon": daemon}
    daemon.stop()
    server.stop()
    index.stop()
    locked.stop()


def run(rig, name: str, pip: str) -> tuple[dict, str]:
    script = {"repository": "", "diff": PRINT_TORCH, "entry_point": "train.py", "requirements": {"pip": pip}}
    task = create_task(rig["api"], name, script, queue=QUEUE)
    doc = wait_status(rig["api"], task, timeout=180)
    return doc, "\n".join(task_log(rig["api"], task))


def test_torch_for_the_drivers_cuda_and_a_private_index(rig):
    doc, log = run(rig, "torch-cuda", "torch==2.5.0+cu118\nshipyard-private-pkg==1.0\n")
    assert doc["status"] == "completed", (doc.get("status_reason"), log)
    assert "torch version 2.5.0+cu121" in log          # driver 12.2: newest index not newer than it
    assert "torch from index cu121" in log and "newest one for an older CUDA (12.1)" in log
    assert PASSWORD not in log and PASSWORD not in rig["daemon"].output()


def test_an_index_refusing_access_fails_the_build_with_its_reason(rig):
    locked = rig["locked"].url("private")   # the agent has no credentials for it
    doc, log = run(rig, "index-401", f"--extra-index-url {locked}\nshipyard-locked-pkg==1.0\n")
    assert doc["status"] == "failed"
    reason = doc["status_reason"]
    assert "refused access" in reason and "401" in reason, reason
    assert log.strip().splitlines()[-1].endswith(reason.split(": ", 1)[-1])
    assert "torch version" not in log and PASSWORD not in log
    cache = rig["root"] / "cache" / "venvs"
    assert not list((cache / "tmp").glob("*")), "a half-built environment was left in the cache"
