"""Preemption on the agent's side, end to end: a real task (a script in a real git repo) that
checkpoints on SIGUSR1 is asked to give its GPU back the way the server's scheduler asks
(status_message "preempting: ..."), is handed back to its queue, and its next run resumes from the
checkpoint under a "resumed after preemption" separator."""
from __future__ import annotations

import time

from agent.execution.preempt import grace_for, signal_number
from shipyard.client.config import load_settings
from tests.agent_helpers import agent_env, create_task, make_repo, start_daemon, task_log, wait_status
from tests.helpers import start_server

TRAIN = '''import os, signal, sys, time
CKPT = {ckpt!r}
step = int(open(CKPT).read()) if os.path.exists(CKPT) else 0
print("starting at step", step, flush=True)
asked = []
signal.signal(signal.SIGUSR1, lambda *_: asked.append(1))
while step < {steps}:
    if asked:
        notice = dict(line.split("=", 1) for line in open(os.environ["SHIPYARD_PREEMPT_FILE"]).read().splitlines())
        open(CKPT, "w").write(str(step))
        print("checkpoint at step", step, "deadline in", round(float(notice["SHIPYARD_PREEMPT_AT"]) - time.time()),
              "s", flush=True)
        sys.exit(0)
    step += 1
    print("step", step, flush=True)
    time.sleep(0.1)
print("finished at step", step, flush=True)
'''


def _wait_line(api, task: str, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in task_log(api, task)):
            return
        time.sleep(0.3)
    raise AssertionError(f"no {text!r} in the console of {task}:\n" + "\n".join(task_log(api, task)[-30:]))


def test_preempted_task_checkpoints_and_resumes(tmp_path):
    ckpt = tmp_path / "ckpt.txt"
    repo, commit = make_repo(tmp_path / "repo", {"train.py": TRAIN.format(ckpt=str(ckpt), steps=30)})
    server = start_server(tmp_path / "server")
    api = server.api()
    env = agent_env(server, tmp_path, SHIPYARD_PREEMPT_GRACE_S="20")
    daemon = start_daemon(env, ["borrowed"], tmp_path / "d.log")
    try:
        task = create_task(api, "borrower", {"repository": str(repo), "version_num": commit,
                                             "entry_point": "train.py"}, queue="borrowed")
        _wait_line(api, task, "step 5")
        asked = time.monotonic()
        # What the server's scheduler does to take the GPUs back (status stays in_progress).
        api.call("tasks.started", {"task": task, "force": True,
                                   "status_message": "preempting: for alice's task t-123"})
        _wait_line(api, task, "checkpoint at step")
        assert time.monotonic() - asked < 15       # the task left on the signal, not on SIGTERM 20s later
        doc = wait_status(api, task, timeout=120)
        assert doc["status"] == "completed", doc["status_reason"]
        lines = task_log(api, task)
    finally:
        daemon.stop()
        server.stop()
    checkpoint = next(line for line in lines if line.startswith("checkpoint at step"))
    saved = int(checkpoint.split()[3])
    assert int(checkpoint.split()[6]) > 5            # the notice file held the 20 s deadline
    assert any("preempting the task (preempting: for alice's task t-123): SIGUSR1 sent" in line for line in lines)
    assert any("handed back to the server" in line for line in lines)
    # The server does not count a preempted run (it keeps its number); the separator still shows.
    heading = next(line for line in lines if line.startswith("--- run") and "resumed after preemption" in line)
    assert "resumed after preemption" in heading, heading
    assert f"starting at step {saved}" in lines[lines.index(heading):]
    assert "finished at step 30" in lines


def test_preempt_settings_name_the_bad_value(tmp_path, monkeypatch):
    assert signal_number("SIGUSR2") == signal_number("usr2") == signal_number("12")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SHIPYARD_QUEUE_PREEMPT_GRACE_S", '{"gpu": "90", "bad": "soon"}')
    agent = load_settings().agent
    assert grace_for(agent, "gpu") == 90 and grace_for(agent, "other") == agent.preempt_grace_s == 30
    for call, setting in ((lambda: grace_for(agent, "bad"), "queue_preempt_grace_s"),
                          (lambda: signal_number("SIGNOPE"), "preempt_signal")):
        try:
            call()
        except Exception as exc:  # noqa: BLE001
            assert setting in str(exc)
        else:
            raise AssertionError("no error")
