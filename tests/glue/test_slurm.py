"""`shipyard slurm` end to end: a real server, a real single-machine Slurm cluster (munged,
slurmctld, slurmd; tests/slurm_cluster.py), the glue as a process, tasks from real git repos
run by `shipyard execute` inside sbatch jobs. Skips when Slurm is not installed or not root.
The cluster and the glue start once for the module; the slowest scenarios are nightly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent_helpers import FINAL, agent_env, create_task, make_repo, task_log, wait_status
from tests.helpers import start_server
from tests.slurm_cluster import SlurmCluster, available

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

CPU, GPU = "slurm-cpu", "slurm-gpu"


class Glue:
    def __init__(self, env: dict[str, str], root: Path):
        self.env, self.root = env, root
        self.log = root / "glue.log"
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> Glue:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shipyard", "slurm", "--queue", CPU, "--queue", f"{GPU}=1",
                 "--partition", "batch", "--output-dir", str(self.root / "slurm-out"), "--watch-s", "0.3",
                 "--node-command", f"{sys.executable} -m shipyard", "--allow-option", "--constraint",
                 "--allow-option", "--nice", "--mem", "1024", *extra],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "handing" in self.log.read_text(errors="replace")[offset:]:
                return self
            assert self.proc.poll() is None, self.output()
            time.sleep(0.1)
        raise AssertionError(f"the glue did not start:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        self.proc.wait(30)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm-e2e")
    os.chmod(root, 0o755)
    cluster = SlurmCluster.start(root / "cluster", gpus=1, memory_mb=4096)
    server = start_server(root / "server")
    api = server.api()
    for name in (CPU, GPU):
        api.call("queues.create", {"name": name})
    env = agent_env(server, root, **cluster.env, SHIPYARD_LEASE_S="20", PYTHONPATH=str(Path.cwd()))
    glue = Glue(env, root).start()
    yield {"api": api, "root": root, "cluster": cluster, "glue": glue, "server": server}
    glue.kill(signal.SIGTERM)
    cluster.stop()
    server.stop()


def _task(rig, name: str, code: str, queue: str = CPU, **hyper) -> str:
    repo, commit = make_repo(rig["root"] / "repos" / name, {"main.py": code})
    section = {k: {"section": "Shipyard", "name": k, "value": str(v)} for k, v in hyper.items()}
    return create_task(rig["api"], name, {"repository": str(repo), "version_num": commit, "entry_point": "main.py"},
                       queue=queue, hyperparams={"Shipyard": section})


def _wait_message(api, task: str, words: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = api.call("tasks.get_by_id", {"task": task})["task"]
        if words in (doc.get("status_message") or ""):
            return doc["status_message"]
        assert doc["status"] not in FINAL, (doc["status"], doc.get("status_reason"))
        time.sleep(0.1)
    raise AssertionError(f"status message never said {words!r}: {doc.get('status_message')!r}")


def test_a_task_runs_through_sbatch_to_completed_with_its_gpu_pinned(rig):
    api = rig["api"]
    task = _task(rig, "hello", "import os\nprint('hello from slurm, gpus', os.environ.get('CUDA_VISIBLE_DEVICES'))\n",
                 queue=GPU)
    doc = wait_status(api, task, timeout=180)
    log = "\n".join(task_log(api, task))
    assert doc["status"] == "completed", (doc.get("status_reason"), log, rig["glue"].output())
    assert "hello from slurm, gpus 0" in log
    jobs = _job_states(rig, task, until=("COMPLETED",))
    assert jobs == [("COMPLETED", f"shipyard task={task} attempt=1")]


def _job_states(rig, task: str, until: str | tuple[str, ...] | None = None,
                timeout: float = 30) -> list[tuple[str, str]]:
    """(state, comment without the key) of every Slurm job of the task, waiting until the last is in `until`."""
    deadline = time.monotonic() + timeout
    while True:
        out = rig["cluster"].run("squeue", "-h", "-t", "all", "-n", f"shipyard-{task}", "-o", "%i|%T|%k").stdout
        rows = sorted((int(i), state, comment.rsplit(" key=", 1)[0])
                      for i, state, comment in (line.split("|") for line in out.splitlines()))
        states = [(state, comment) for _i, state, comment in rows]
        if until is None or (states and states[-1][0] in until) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def _started_at(doc: dict) -> str:
    return str(doc.get("started"))


def test_two_tasks_over_one_gpu_run_one_after_the_other_and_the_second_shows_its_pending_reason(rig):
    api = rig["api"]
    code = "import time\nprint('on the gpu', flush=True)\ntime.sleep(2)\n"
    first = _task(rig, "gpu-first", code, queue=GPU)
    wait_status(api, first, statuses={"in_progress"}, timeout=60)
    second = _task(rig, "gpu-second", code, queue=GPU)
    message = _wait_message(api, second, ": Resources")
    assert message.startswith("pending in slurm job "), message
    done = [wait_status(api, task, timeout=180) for task in (first, second)]
    assert [d["status"] for d in done] == ["completed", "completed"], [d.get("status_reason") for d in done]
    spans = []
    for task in (first, second):
        _job_states(rig, task, until=("COMPLETED",))
        out = rig["cluster"].run("squeue", "-h", "-t", "all", "-n", f"shipyard-{task}", "-o", "%S|%e").stdout
        spans.append(out.split()[0].split("|"))
    assert spans[0][1] <= spans[1][0], spans   # the first job ended before the second started


def test_abort_of_a_running_task_ends_it_stopped_and_the_job_goes(rig):
    api = rig["api"]
    task = _task(rig, "abort", "import time\nprint('working', flush=True)\ntime.sleep(120)\n")
    deadline = time.monotonic() + 120
    while not any("working" in line for line in task_log(api, task)):
        assert time.monotonic() < deadline, rig["glue"].output()
        time.sleep(0.2)
    api.call("tasks.stop", {"task": task})
    doc = wait_status(api, task, timeout=60)
    assert doc["status"] == "stopped", doc.get("status_reason")
    assert doc["status_reason"].startswith("aborted"), doc["status_reason"]
    states = _job_states(rig, task, until=("COMPLETED", "FAILED", "CANCELLED"), timeout=30)
    assert states[-1][0] in ("COMPLETED", "FAILED", "CANCELLED") and len(states) == 1


def test_a_disallowed_sbatch_option_fails_the_task_at_once_naming_it(rig):
    api = rig["api"]
    task = _task(rig, "bad-option", "print('never')\n", engine_options="--nodelist=elsewhere")
    doc = wait_status(api, task, timeout=30)
    assert doc["status"] == "failed"
    assert "'--nodelist'" in doc["status_reason"] and "--allow-option" in doc["status_reason"]
    assert any("--nodelist" in line for line in task_log(api, task))
    assert _job_states(rig, task) == []


def test_a_task_over_its_memory_fails_with_the_reason(rig):
    api = rig["api"]
    task = _task(rig, "oom", "import time\nblob = b'x' * (900 << 20)\ntime.sleep(10)\n", memory_mb=600)
    doc = wait_status(api, task, timeout=180)
    assert doc["status"] == "failed"
    assert "OUT_OF_MEMORY" in doc["status_reason"] and "memory_mb" in doc["status_reason"], \
        (doc["status_reason"], _job_outputs(rig))


def _job_outputs(rig) -> str:
    """The jobs' own output files, for a failure's message."""
    return "".join(f.read_text(errors="replace")[-2000:] for f in sorted((rig["root"] / "slurm-out").glob("*")))


def test_the_glue_killed_and_restarted_mid_run_loses_and_duplicates_nothing(rig):
    api, glue = rig["api"], rig["glue"]
    task = _task(rig, "restart", "import time\nprint('one run', flush=True)\ntime.sleep(6)\nprint('done')\n")
    wait_status(api, task, statuses={"in_progress"}, timeout=60)
    glue.kill(signal.SIGKILL)
    try:
        queued = _task(rig, "while-away", "print('later')\n")
        time.sleep(1)
    finally:
        glue.start()
    docs = [wait_status(api, t, timeout=180) for t in (task, queued)]
    assert [d["status"] for d in docs] == ["completed", "completed"], [d.get("status_reason") for d in docs]
    assert [line for line in task_log(api, task) if line == "one run"] == ["one run"]
    assert [s for s, _c in _job_states(rig, task, until=("COMPLETED",))] == ["COMPLETED"]


@pytest.mark.nightly
def test_scontrol_requeue_hands_the_task_back_and_it_finishes_once(rig):
    api = rig["api"]
    task = _task(rig, "requeue", "import time\nprint('run', flush=True)\ntime.sleep(8)\nprint('finished')\n")
    deadline = time.monotonic() + 120
    while not any(line == "run" for line in task_log(api, task)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first = rig["cluster"].run("squeue", "-h", "-n", f"shipyard-{task}", "-o", "%i").stdout.split()[0]
    rig["cluster"].run("scontrol", "requeue", first)
    doc = wait_status(api, task, timeout=240)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert task_log(api, task).count("finished") == 1
    assert [c for _s, c in _job_states(rig, task, until=("COMPLETED",))][-1].endswith("attempt=2")


@pytest.mark.nightly
def test_a_task_past_its_time_limit_ends_timed_out(rig):
    api = rig["api"]
    task = _task(rig, "slow", "import time\nprint('slow', flush=True)\ntime.sleep(600)\n", max_runtime_s=5)
    doc = wait_status(api, task, timeout=240)
    assert doc["status"] in ("failed", "stopped") and "timed_out" in doc["status_reason"], doc["status_reason"]


@pytest.mark.nightly
def test_a_node_going_down_mid_run_requeues_the_task_and_it_finishes_once(rig):
    api, cluster = rig["api"], rig["cluster"]
    task = _task(rig, "node-down", "import time\nprint('run', flush=True)\ntime.sleep(8)\nprint('finished')\n")
    deadline = time.monotonic() + 120
    while not any(line == "run" for line in task_log(api, task)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cluster.run("scontrol", "update", f"nodename={cluster.host}", "state=down", "reason=shipyard-test")
    try:
        deadline = time.monotonic() + 60
        while not any(c.endswith("attempt=2") for _s, c in _job_states(rig, task)):
            assert time.monotonic() < deadline, (_job_states(rig, task), rig["glue"].output()[-3000:])
            time.sleep(0.5)
    finally:
        cluster.run("scontrol", "update", f"nodename={cluster.host}", "state=resume", check=False)
        deadline = time.monotonic() + 60
        while "idle" not in cluster.node_state() and "mix" not in cluster.node_state() \
                and "alloc" not in cluster.node_state() and time.monotonic() < deadline:
            time.sleep(0.5)
    doc = wait_status(api, task, timeout=240)
    assert doc["status"] == "completed", doc.get("status_reason")
    assert task_log(api, task).count("finished") == 1
    assert _job_states(rig, task, until=("COMPLETED",))[-1] == ("COMPLETED", f"shipyard task={task} attempt=2")
