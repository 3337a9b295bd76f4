"""The AWS provider for real: boto3 over loopback HTTP to a moto server this module starts, and
the per-machine keys minted by a real Shipyard server. A "machine" here is an EC2 record in
moto; the test plays its agent with the key found in its user data."""
from __future__ import annotations

import base64
import importlib.util
import os
import re
import subprocess
import sys
import time
import uuid

import boto3
import pytest
import requests

from autoscaler.config import parse_config
from autoscaler.control_http import HttpControlPlane
from autoscaler.loop import Autoscaler, Hosts
from autoscaler.model import Phase
from autoscaler.providers import build_provider
from autoscaler.state import StateFile
from shipyard.client.api import ApiClient
from tests.agent_helpers import create_task
from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, ApiFailure, free_port


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    if importlib.util.find_spec("moto") is None:
        if os.environ.get("CI"):
            raise RuntimeError("moto[server] is missing (pip install -e '.[test]')")
        pytest.skip("moto[server] is not installed")
    port = free_port()
    with open(tmp_path_factory.mktemp("moto") / "moto.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            assert proc.poll() is None, "moto server exited"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture()
def aws_env(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture()
def ec2(moto_url, aws_env):
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url)


@pytest.fixture()
def rig(server, api, moto_url, ec2, tmp_path):
    """An autoscaler named for this test, on its own queue, against moto and the real server."""
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    name, queue = f"t{uuid.uuid4().hex[:8]}", f"gpu-{uuid.uuid4().hex[:6]}"
    lines: list[str] = []

    def build(**knobs) -> Autoscaler:
        budget = knobs.pop("budget", {})
        tree = {
            "name": name, "provider": "aws", "idle_timeout_s": 1.5, "drain_s": 0.5, "spinup_timeout_s": 600,
            "spot_fallback_after": 2, "state_file": str(tmp_path / "state.json"), "budget": budget,
            "aws": {"region": "us-east-1", "endpoint_url": moto_url},
            "agent": {"api_host": "https://shipyard.example.com:8008", "extra_env": {"SHIPYARD_STATUS_REPORT_S": "5"}},
            "resources": {"gpu": {"instance_type": "g5.xlarge", "price_on_demand": 1.0, "price_spot": 0.4,
                                  "spot": True, "image_id": image, "disk_gb": 120, "gpus": 1, "zone": "us-east-1a",
                                  "tags": {"team": "ml"}, "docker_image": "nvidia/cuda:12.4.1-runtime-ubuntu22.04"}},
            "queues": {queue: [["gpu", 3]]}, **knobs,
        }
        config = parse_config(tree)
        admin = ApiClient(server.api_url, ACCESS_KEY, SECRET_KEY, "autoscaler-test")
        scaler = Autoscaler(config, build_provider(config), HttpControlPlane(admin), StateFile(config.state_file),
                            Hosts("https://shipyard.example.com:8008", "https://f", "https://w"), echo=lines.append)
        scaler.control.ensure_queues(scaler.queue_names())
        return scaler

    return {"build": build, "name": name, "queue": queue, "lines": lines, "image": image}


def enqueue(api: Api, queue: str, n: int = 1) -> list[str]:
    return [create_task(api, f"aws-{i}", {"repository": "", "entry_point": "t.py", "diff": "print(1)\n"},
                        queue=queue) for i in range(n)]


def instances(ec2, name: str) -> list[dict]:
    pages = ec2.describe_instances(Filters=[{"Name": "tag:shipyard:autoscaler", "Values": [name]}])
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def user_data(ec2, instance_id: str) -> str:
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"]).decode()


class Machine:
    """Plays the agent of one EC2 record, with the key from its user data."""

    def __init__(self, server, script: str):
        env = dict(re.findall(r"^(\w+)=(.*)$", script, re.M))
        self.worker = env["CLEARML_WORKER_ID"]
        self.key = (env["CLEARML_API_ACCESS_KEY"].strip("'"), env["CLEARML_API_SECRET_KEY"].strip("'"))
        self.api = Api(server.api_url, *self.key)

    def report(self, queue_id: str, task: str | None = None) -> None:
        body = {"worker": self.worker, "queues": [queue_id], "timestamp": int(time.time() * 1000)}
        if task:
            body["task"] = task
        self.api.call("workers.status_report", body)


def queue_id(api: Api, name: str) -> str:
    return next(q["id"] for q in api.call("queues.get_all")["queues"] if q["name"] == name)


def test_launch_types_tags_user_data_and_terminate_at_idle(server, api, ec2, rig):
    scaler = rig["build"]()
    enqueue(api, rig["queue"], 2)
    # Launch: two spot machines with the right type, tags, disk and user data
    scaler.tick()
    found = instances(ec2, rig["name"])
    assert len(found) == 2
    for inst in found:
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert inst["InstanceType"] == "g5.xlarge" and inst.get("InstanceLifecycle") == "spot"
        assert tags["shipyard:resource"] == "gpu" and tags["shipyard:queue"] == rig["queue"]
        assert tags["shipyard:market"] == "spot" and tags["team"] == "ml" and tags["Name"] == tags["shipyard:label"]
        script = user_data(ec2, inst["InstanceId"])
        assert script.startswith("#!/bin/bash") and "shipyard daemon --queue " + rig["queue"] in script
        assert "CLEARML_API_HOST=https://shipyard.example.com:8008" in script
        assert "SHIPYARD_DOCKER_DEFAULT_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04" in script
        assert ACCESS_KEY not in script and SECRET_KEY not in script, "no long-lived secret in user data"
        assert f"CLEARML_WORKER_ID={tags['shipyard:label']}" in script
        volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [inst["InstanceId"]]}])
        assert [v["Size"] for v in volumes["Volumes"]] == [120]
    machines = [Machine(server, user_data(ec2, i["InstanceId"])) for i in found]
    # The minted keys are per machine and valid on the server
    assert len({m.key for m in machines}) == 2
    qid = queue_id(api, rig["queue"])
    taken = {}
    for machine in machines:
        machine.report(qid)
        taken[machine] = machine.api.call("queues.get_next_task", {"queue": qid})["entry"]["task"]
        machine.api.call("tasks.started", {"task": taken[machine], "force": True})
        machine.report(qid, taken[machine])
    scaler.tick()
    assert {r.phase for r in scaler.records.values()} == {Phase.BUSY}
    # Tasks end; idle past the timeout → drained (key revoked), then terminated
    for machine, task in taken.items():
        machine.api.call("tasks.completed", {"task": task, "force": True})
        machine.report(qid)
    scaler.tick()
    time.sleep(1.6)
    scaler.tick()
    assert {r.phase for r in scaler.records.values()} == {Phase.DRAINING}
    for machine in machines:
        with pytest.raises(ApiFailure) as err:
            machine.api.call("queues.get_next_task", {"queue": qid})
        assert err.value.code == 401, "a draining machine can claim nothing"
    time.sleep(0.6)
    scaler.tick()
    assert not scaler.records
    assert {i["State"]["Name"] for i in instances(ec2, rig["name"])} == {"terminated"}
    for machine in machines:
        with pytest.raises(ApiFailure):
            machine.api.login(*machine.key)
    workers = {w["id"] for w in api.call("workers.get_all")["workers"]}
    assert not {m.worker for m in machines} & workers


def test_preemptions_requeue_the_task_then_on_demand(server, api, ec2, rig):
    scaler = rig["build"](queues={rig["queue"]: [["gpu", 1]]})
    (task,) = enqueue(api, rig["queue"])
    qid = queue_id(api, rig["queue"])
    for leased in (True, False):  # an agent that holds a lease, and one that does not
        scaler.tick()
        (rec,) = scaler.records.values()
        assert rec.market.value == "spot"
        machine = Machine(server, user_data(ec2, rec.id))
        claim = {"queue": qid, **({"lease_s": 600, "worker": machine.worker} if leased else {})}
        assert machine.api.call("queues.get_next_task", claim)["entry"]["task"] == task
        machine.api.call("tasks.started", {"task": task, "force": True})
        if not leased:
            machine.report(qid, task)
        scaler.tick()
        assert rec.phase is Phase.BUSY or leased
        # AWS reclaims the spot machine
        ec2.terminate_instances(InstanceIds=[rec.id])
        scaler.tick()
        doc = api.call("tasks.get_by_id", {"task": task})["task"]
        assert doc["status"] == "queued" and "re-queued" in "\n".join(rig["lines"])
        entries = [e["task"] for e in api.call("queues.get_by_id", {"queue": qid})["queue"]["entries"]]
        assert entries == [task]
        if leased:  # given back through tasks.release: the server counted the attempt
            assert doc["shipyard_attempts"][-1]["end"].startswith("infrastructure: instance")
        with pytest.raises(ApiFailure):
            machine.api.login(*machine.key)
    # Two failures: the next machine is on-demand
    scaler.tick()
    (rec,) = scaler.records.values()
    (inst,) = [i for i in instances(ec2, rig["name"]) if i["InstanceId"] == rec.id]
    assert rec.market.value == "on-demand" and "InstanceLifecycle" not in inst
    assert any("on-demand: 2 spot failures" in line for line in rig["lines"])


def test_budget_refusal_caps_the_fleet(api, ec2, rig):
    scaler = rig["build"](budget={"max_per_hour": 1.0})
    enqueue(api, rig["queue"], 3)
    scaler.tick()
    scaler.tick()
    assert len(instances(ec2, rig["name"])) == 2  # 2 x $0.40 spot; a third would be $1.20/h
    assert any("budget: $1.20/h would exceed $1.00/h" in line for line in rig["lines"])
