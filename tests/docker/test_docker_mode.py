"""Docker mode end to end: a real server, a real `shipyard daemon --docker`, a real engine."""
from __future__ import annotations

import signal
import time
import uuid

import pytest

from tests.agent_helpers import agent_env, create_task, git, make_repo, start_daemon, task_log, wait_status
from tests.docker.conftest import containers_of
from tests.helpers import start_server

pytestmark = pytest.mark.timeout(900)
QUEUE = "docker-e2e"


@pytest.fixture(scope="module")
def rig(tmp_path_factory, docker_client, base_image):
    root = tmp_path_factory.mktemp("docker-e2e")
    server = start_server(root / "server")
    worker = f"docker-e2e-{uuid.uuid4().hex[:8]}:0"
    env = agent_env(server, root, CLEARML_WORKER_ID=worker)
    daemon = start_daemon(env, [QUEUE], root / "daemon.log", "--docker", base_image, "--services-mode", "2")
    yield {"server": server, "api": server.api(), "root": root, "daemon": daemon, "worker": worker,
           "client": docker_client, "image": base_image, "env": env}
    daemon.stop()
    server.stop()


def run_task(rig, name: str, script: dict, **fields) -> tuple[dict, str]:
    task = create_task(rig["api"], name, script, queue=QUEUE, **fields)
    doc = wait_status(rig["api"], task, timeout=300)
    return doc, "\n".join(task_log(rig["api"], task))


def literal(code: str, name: str = "main.py", **script) -> dict:
    return {"repository": "", "entry_point": name, "diff": code, **script}


def wait_for_line(rig, task: str, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in task_log(rig["api"], task)):
            return
        time.sleep(0.2)
    raise AssertionError(f"'{text}' never appeared in the log of {task}")


def test_task_runs_in_a_container_with_its_diff_and_requirements(rig):
    # Given a repository, an uncommitted diff and a pinned requirement
    repo, commit = make_repo(rig["root"] / "repos" / "diff", {"train.py": "print('base')\n"})
    (repo / "train.py").write_text(
        "import os, six\nprint('base')\nprint('from the diff', six.__version__)\n"
        "print('in container', os.path.exists('/.dockerenv'), os.environ['CLEARML_TASK_ID'])\n")
    script = {"repository": str(repo), "version_num": commit, "entry_point": "train.py",
              "diff": git(repo, "diff") + "\n", "requirements": {"pip": "six==1.16.0\n"}}
    # When it runs twice
    doc, log = run_task(rig, "diff-and-reqs", script)
    doc2, log2 = run_task(rig, "diff-and-reqs-again", script)
    # Then both ran in a container, with the diff and six; the second reused the environment
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "from the diff 1.16.0" in log and f"in container True {doc['id']}" in log
    assert any(line.startswith("six==1.16.0") for line in doc["script"]["requirements"]["pip"])
    assert doc2["status"] == "completed" and "from the diff 1.16.0" in log2
    assert "ready (cache hit)" in log2
    # and no container is left behind
    assert containers_of(rig["client"], worker=rig["worker"], task=doc["id"]) == []


def test_the_sdk_inside_reaches_the_server(rig):
    # The same CLEARML_* variables as venv mode; host network, so localhost URLs work as they are.
    # The key is the run's own (role task), never the agent's (issue 17, attack 3).
    code = ("import base64, json, os, urllib.request\n"
            "host, access = os.environ['CLEARML_API_HOST'], os.environ['CLEARML_API_ACCESS_KEY']\n"
            "print('ping', urllib.request.urlopen(host + '/debug.ping', timeout=10).status)\n"
            "print('worker', os.environ['CLEARML_WORKER_ID'])\n"
            "basic = base64.b64encode(f\"{access}:{os.environ['CLEARML_API_SECRET_KEY']}\".encode()).decode()\n"
            "login = urllib.request.Request(host + '/auth.login', data=b'{}',\n"
            "                               headers={'Authorization': 'Basic ' + basic})\n"
            "token = json.load(urllib.request.urlopen(login, timeout=10))['data']['token']\n"
            "me = urllib.request.Request(host + '/users.get_current_user', data=b'{}',\n"
            "                            headers={'Authorization': 'Bearer ' + token})\n"
            "print('key', access, 'role', json.load(urllib.request.urlopen(me, timeout=10))['data']['user']['role'])\n")
    doc, log = run_task(rig, "reach-server", literal(code))
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "ping 200" in log and f"worker {rig['worker']}" in log
    key_line = next(line for line in log.splitlines() if line.startswith("key "))
    assert key_line.endswith(" role task") and rig["env"]["CLEARML_API_ACCESS_KEY"] not in key_line


def test_per_task_image_and_arguments(rig):
    # Given the base image under a second name, and a task that names it with an allowed argument
    image = rig["client"].images.get(rig["image"])
    tag = f"override-{uuid.uuid4().hex[:6]}"
    image.tag("shipyard-test/python", tag)
    try:
        code = ("import os\nprint('image', os.environ['CLEARML_DOCKER_IMAGE'])\n"
                "shm = os.statvfs('/dev/shm')\nprint('shm', shm.f_blocks * shm.f_frsize)\n")
        doc, log = run_task(rig, "image-override", literal(code),
                            container={"image": f"shipyard-test/python:{tag}", "arguments": "--shm-size 96m",
                                       "setup_shell_script": "echo setup-ran-here"})
        legacy, legacy_log = run_task(rig, "docker-cmd", literal(code),
                                      execution={"docker_cmd": f"shipyard-test/python:{tag} --shm-size=80m"})
    finally:
        rig["client"].images.remove(f"shipyard-test/python:{tag}")
    # Then each ran in the image it named, with its arguments and its setup script
    assert doc["status"] == "completed", doc.get("status_reason")
    assert f"image shipyard-test/python:{tag}" in log and f"shm {96 << 20}" in log
    assert "setup-ran-here" in log and "from the task's container.image" in log
    assert legacy["status"] == "completed", legacy.get("status_reason")
    assert f"shm {80 << 20}" in legacy_log  # (our server turns docker_cmd into container fields, as ClearML's)


def test_arguments_outside_the_allow_list_are_refused(rig):
    doc, log = run_task(rig, "privileged", literal("print('must not run')\n"),
                        container={"image": rig["image"], "arguments": "--privileged"})
    assert doc["status"] == "failed"
    assert doc["status_reason"].startswith("docker_args:")
    assert "--privileged is not allowed" in doc["status_reason"]
    assert "must not run" not in log


def test_an_image_that_does_not_exist_fails_the_task_clearly(rig):
    doc, log = run_task(rig, "no-such-image", literal("print('must not run')\n"),
                        container={"image": "shipyard-test/does-not-exist:1"})
    assert doc["status"] == "failed"
    assert doc["status_reason"].startswith("image:")
    assert "shipyard-test/does-not-exist:1" in doc["status_reason"] and "could not be pulled" in doc["status_reason"]


def test_failing_setup_script_and_bad_requirement(rig):
    setup, _ = run_task(rig, "bad-setup", literal("print('must not run')\n"),
                        container={"image": rig["image"], "setup_shell_script": "exit 3"})
    assert setup["status"] == "failed" and setup["status_reason"].startswith("setup_script:")
    assert "exited with code 3" in setup["status_reason"]
    reqs, _ = run_task(rig, "bad-requirement", literal("print('must not run')\n",
                                                       requirements={"pip": "shipyard-no-such-package-xyz==1.0\n"}))
    assert reqs["status"] == "failed" and reqs["status_reason"].startswith("requirements:"), reqs["status_reason"]
    assert "shipyard-no-such-package-xyz" in reqs["status_reason"]
    exits, _ = run_task(rig, "exit-code", literal("import sys\nsys.exit(5)\n"))
    assert exits["status"] == "failed" and "exited with code 5" in exits["status_reason"]


def test_abort_stops_the_container(rig):
    # Given a task that ignores SIGTERM
    code = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('started', flush=True)\ntime.sleep(600)\n")
    task = create_task(rig["api"], "abort-me", literal(code), queue=QUEUE)
    wait_for_line(rig, task, "started")
    assert len(containers_of(rig["client"], worker=rig["worker"], task=task)) == 1
    # When it is aborted
    rig["api"].call("tasks.stop", {"task": task})
    doc = wait_status(rig["api"], task, timeout=120)
    # Then it is stopped (killed after the grace period) and its container is gone
    assert doc["status"] == "stopped", doc.get("status_reason")
    assert "killed after the grace period" in doc["status_reason"]
    assert containers_of(rig["client"], worker=rig["worker"], task=task) == []


def test_abort_during_the_setup_script(rig):
    task = create_task(rig["api"], "abort-in-setup", literal("print('must not run')\n"), queue=QUEUE,
                       container={"image": rig["image"], "setup_shell_script": "echo setting-up\nsleep 600\n"})
    wait_for_line(rig, task, "setting-up")
    rig["api"].call("tasks.stop", {"task": task})
    doc = wait_status(rig["api"], task, timeout=120)
    assert doc["status"] == "stopped", doc.get("status_reason")
    assert "must not run" not in "\n".join(task_log(rig["api"], task))
    assert containers_of(rig["client"], worker=rig["worker"], task=task) == []


def test_a_non_root_user(tmp_path, rig):
    # Given a daemon that runs containers as uid 1000
    worker = f"docker-user-{uuid.uuid4().hex[:8]}:0"
    env = {**rig["env"], "CLEARML_WORKER_ID": worker, "SHIPYARD_DOCKER_USER": "1000:1000"}
    daemon = start_daemon(env, ["docker-user"], tmp_path / "d.log", "--docker", rig["image"])
    try:
        code = ("import os, six\nopen('out.txt', 'w').write('x')\n"
                "print('uid', os.getuid(), 'home', os.environ['HOME'], 'six', six.__version__)\n")
        task = create_task(rig["api"], "as-user", literal(code, requirements={"pip": "six==1.16.0\n"}),
                           queue="docker-user")
        doc = wait_status(rig["api"], task, timeout=300)
        log = "\n".join(task_log(rig["api"], task))
    finally:
        daemon.stop()
    # Then it ran as that user, built its environment as that user, and could write its files
    assert doc["status"] == "completed", (doc.get("status_reason"), log[-2000:])
    assert "uid 1000 home /shipyard/task/home six 1.16.0" in log


def test_services_mode_runs_two_containers_at_once(rig):
    # Given a daemon with --services-mode 2 and two long-lived tasks
    code = "import time\nprint('service up', flush=True)\ntime.sleep(8)\nprint('service done')\n"
    tasks = [create_task(rig["api"], f"service-{i}", literal(code), queue=QUEUE) for i in range(2)]
    # Then both containers run at the same time
    deadline, most = time.monotonic() + 120, 0
    while time.monotonic() < deadline and most < 2:
        running = [c for c in containers_of(rig["client"], worker=rig["worker"]) if c.status == "running"]
        most = max(most, len({c.labels["shipyard.task"] for c in running} & set(tasks)))
        time.sleep(0.2)
    assert most == 2
    for task in tasks:
        assert wait_status(rig["api"], task, timeout=120)["status"] == "completed"


def test_a_restarted_daemon_reaps_its_orphans(tmp_path, rig):
    # Given a daemon of its own, running a long task in a container
    worker = f"docker-reap-{uuid.uuid4().hex[:8]}:0"
    env = {**rig["env"], "CLEARML_WORKER_ID": worker}
    daemon = start_daemon(env, ["docker-reap"], tmp_path / "d1.log", "--docker", rig["image"])
    task = create_task(rig["api"], "orphan", literal("import time\nprint('up', flush=True)\ntime.sleep(600)\n"),
                       queue="docker-reap")
    try:
        wait_for_line(rig, task, "up")
        # When the daemon is killed -9, the container lives on
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        assert [c.status for c in containers_of(rig["client"], worker=worker)] == ["running"]
        # and a new daemon with the same worker id starts (on another queue, so the task is not rerun)
        daemon = start_daemon(env, ["docker-reap-2"], tmp_path / "d2.log", "--docker", rig["image"])
        # Then the orphan is gone before the daemon listens
        assert containers_of(rig["client"], worker=worker) == []
        assert "removing leftover container" in daemon.output()
    finally:
        daemon.stop()
        for container in containers_of(rig["client"], worker=worker):
            container.remove(force=True)


@pytest.mark.nightly   # ~20 s; the signal path is the same runner code the venv-mode test covers by default
def test_preemption_signal_reaches_the_task_in_its_container(rig):
    # Given a task in a container that saves its step on SIGUSR1 and exits
    code = ("import os, signal, sys, time\nasked = []\nsignal.signal(signal.SIGUSR1, lambda *_: asked.append(1))\n"
            "print('started', flush=True)\nfor step in range(60):\n    if asked:\n"
            "        print('checkpoint at', step, open(os.environ['SHIPYARD_PREEMPT_FILE']).read().split()[0], flush=True)\n"
            "        sys.exit(0)\n    time.sleep(0.1)\nprint('finished', flush=True)\n")
    task = create_task(rig["api"], "preempt-me", literal(code), queue=QUEUE)
    wait_for_line(rig, task, "started")
    # When the server asks for its GPUs back
    rig["api"].call("tasks.started", {"task": task, "force": True, "status_message": "preempting: for bob's task t9"})
    wait_for_line(rig, task, "checkpoint at")
    # Then it got the signal and the notice inside the container, went back to its queue and ran again
    doc = wait_status(rig["api"], task, timeout=300)
    lines = task_log(rig["api"], task)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert any(line.startswith("checkpoint at") and "SHIPYARD_PREEMPT_AT=" in line for line in lines)
    assert any(line.startswith("--- run 2") and "resumed after preemption" in line for line in lines)
    assert "finished" in lines
