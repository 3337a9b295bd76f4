"""Docker mode's pure parts, no engine needed: argument parsing and the allow-list, which image
a task runs in, GPU requests, URLs, the container's entry script, the environment cache key."""
from __future__ import annotations

from pathlib import Path

import pytest

from agent.execution.docker import (
    ContainerPlan,
    ContainerRequest,
    container_options,
    container_request,
    entry_script,
    gpu_env,
    python_candidates,
    reachable_url,
)
from sandbox.docker_runner import (
    ContainerSpec,
    DockerArgError,
    DockerOptions,
    ImageError,
    ImageRef,
    Mount,
    env_key,
    parse_args,
)
from sandbox.requirements import parse_requirements
from shipyard.client.config import DEFAULT_DOCKER_ALLOWED_ARGS, DockerSettings

IMAGE = ImageRef(name="img:1", id="sha256:" + "a" * 64, path="/usr/bin:/bin")


def test_supported_arguments_become_create_kwargs():
    options = parse_args(["-e", "A=1", "--env=B=2", "--shm-size", "2g", "--cpus=1.5", "--ulimit", "nofile=1024:2048",
                          "--tmpfs", "/scratch:size=1g", "-l", "team=ml", "--rm", "-it"], None)
    kw = options.kwargs
    assert kw["environment"] == ["A=1", "B=2"] and kw["shm_size"] == "2g" and kw["nano_cpus"] == 1_500_000_000
    assert kw["ulimits"][0]["Name"] == "nofile" and kw["ulimits"][0]["Hard"] == 2048
    assert kw["tmpfs"] == {"/scratch": "size=1g"} and kw["labels"] == {"team": "ml"}
    assert any("--rm" in note for note in options.notes) and any("-it" in note for note in options.notes)


@pytest.mark.parametrize("args, message", [
    (["--privileged"], "--privileged is not allowed"),
    (["-v", "/root/.ssh:/keys"], "--volume /root/.ssh:/keys is not allowed"),
    (["--ipc", "host"], "--ipc host is not allowed"),
    (["--network=none"], "--network none is not allowed"),
    (["--entrypoint", "sh"], "not supported"),
    (["--frobnicate"], "not one Shipyard understands"),
    (["-e", "HOME"], "needs NAME=value"),
    (["--label", "shipyard.worker=x"], "shipyard.* labels"),
    (["--shm-size"], "needs a value"),
])
def test_task_arguments_outside_the_allow_list_are_refused(args, message):
    with pytest.raises(DockerArgError, match=message.replace("*", r"\*").replace(".", r"\.")):
        parse_args(args, DEFAULT_DOCKER_ALLOWED_ARGS)


def test_allow_list_entries_with_a_value_allow_only_that_value():
    allowed = ("--ipc=host", "-e")
    assert parse_args(["--ipc=host", "--env", "X=1"], allowed).kwargs["ipc_mode"] == "host"
    with pytest.raises(DockerArgError):
        parse_args(["--ipc", "private"], allowed)


def test_the_operators_arguments_are_trusted():
    options = parse_args(["--gpus", "all", "-v", "/data:/data:ro", "--privileged"], None, who="agent")
    assert options.kwargs["privileged"] is True and options.kwargs["volumes"] == ["/data:/data:ro"]
    assert options.kwargs["device_requests"][0]["Count"] == -1


def test_which_image_a_task_runs_in():
    docker = DockerSettings(default_image="base:1", default_args=("--shm-size", "1g"), extra_args=("-e", "X=1"))
    # the task's container fields win
    request = container_request({"container": {"image": "mine:2", "arguments": "--cpus 2",
                                               "setup_shell_script": "apt-get update"}}, docker)
    assert (request.image, request.task_args, request.agent_args) == ("mine:2", ("--cpus", "2"), ("-e", "X=1"))
    assert request.setup_script == "apt-get update"
    # then the legacy execution.docker_cmd
    request = container_request({"execution": {"docker_cmd": "old:3 --shm-size=64m"}}, docker)
    assert (request.image, request.task_args) == ("old:3", ("--shm-size=64m",))
    # then the agent's default, with its default arguments
    request = container_request({}, docker)
    assert request.image == "base:1" and request.agent_args == ("--shm-size", "1g", "-e", "X=1")
    with pytest.raises(ImageError, match="no default"):
        container_request({}, DockerSettings())


def test_container_options_check_only_the_task_arguments():
    docker = DockerSettings(extra_args=("--privileged",))
    request = ContainerRequest("img", ("--shm-size", "1g"), docker.extra_args, "", "test")
    assert container_options(request, docker).kwargs == {"privileged": True, "shm_size": "1g"}
    with pytest.raises(DockerArgError):
        container_options(ContainerRequest("img", ("--privileged",), (), "", "test"), docker)


def test_gpus_become_a_device_request_and_visible_devices():
    spec = ContainerSpec(image=IMAGE, command=["/bin/sh"], name="n", labels={"shipyard.task": "t"},
                         environment={"A": "1"}, mounts=[Mount(Path("/x"), "/y")], working_dir="/y",
                         options=DockerOptions(), gpus=(2, 3))
    kw = spec.create_kwargs()
    request = kw["device_requests"][0]
    assert request["DeviceIDs"] == ["2", "3"] and request["Capabilities"] == [["gpu"]]
    assert kw["network_mode"] == "host" and kw["init"] is True and "privileged" not in kw
    assert kw["mounts"][0]["ReadOnly"] is True and kw["environment"] == ["A=1"]
    env = gpu_env({"CUDA_VISIBLE_DEVICES": "2,3", "OTHER": "x"}, (2, 3))
    assert env == {"CUDA_VISIBLE_DEVICES": "0,1", "NVIDIA_VISIBLE_DEVICES": "2,3", "OTHER": "x"}
    assert gpu_env({"CUDA_VISIBLE_DEVICES": ""}, ()) == {"CUDA_VISIBLE_DEVICES": ""}


def test_a_bridge_network_reaches_a_local_server_through_the_host_gateway():
    assert reachable_url("http://127.0.0.1:8008", "host") == "http://127.0.0.1:8008"
    assert reachable_url("http://localhost:8008/x", "bridge") == "http://host.docker.internal:8008/x"
    assert reachable_url("https://api.example.com", "bridge") == "https://api.example.com"
    spec = ContainerSpec(image=IMAGE, command=["sh"], name="n", labels={}, environment={}, mounts=[],
                         working_dir="/", options=DockerOptions(), network="bridge")
    assert spec.create_kwargs()["extra_hosts"] == {"host.docker.internal": "host-gateway"}


def test_entry_script_quotes_what_it_runs():
    reqs = parse_requirements("six==1.16.0\n")
    plan = ContainerPlan(request=ContainerRequest("img", (), (), "", "test"), image=IMAGE, options=DockerOptions(),
                         venv="/v", cache_key=None, build=True, argv=["/v/bin/python", "/shipyard/task/code/a b.py",
                                                                     "--name", "it's"],
                         workdir="/shipyard/task/code", requirements=reqs, candidates=["python3"])
    script = entry_script("t1", plan)
    assert "exec /v/bin/python '/shipyard/task/code/a b.py' --name 'it'\"'\"'s'" in script
    assert "container_build.py" in script
    plan.build = False
    assert "container_build.py" not in entry_script("t1", plan)


def test_environment_key_covers_image_python_requirements_and_setup():
    base = env_key("sha256:a", ["python3"], "six==1.16.0", "")
    assert base == env_key("sha256:a", ["python3"], "six==1.16.0", "")
    assert len({base, env_key("sha256:b", ["python3"], "six==1.16.0", ""),
                env_key("sha256:a", ["python3.12", "python3"], "six==1.16.0", ""),
                env_key("sha256:a", ["python3"], "six==1.17.0", ""),
                env_key("sha256:a", ["python3"], "six==1.16.0", "apt-get install -y libpq5")}) == 5


def test_python_candidates_follow_the_recording():
    reqs = parse_requirements("# Python 3.10.4 (main)\nsix\n")
    assert python_candidates({"binary": "python3.10"}, reqs) == ["python3.10", "python3", "python"]
    assert python_candidates({}, parse_requirements("six\n")) == ["python3", "python"]
