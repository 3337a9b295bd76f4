"""The whole preemption cycle, server and agent together: a quota owner's task takes its GPU back
from a borrower whose task checkpoints on the signal, and the borrower resumes from its checkpoint.

One fake GPU, one real daemon, two keys: the admin (no quota) borrows the GPU for a training
script in a real git repository; alice gets a guarantee of 1 GPU and enqueues a task. The server's
preemption pass asks the borrower's agent to preempt; the agent sends SIGUSR1 and writes the notice
file; the script saves its step and exits; the agent hands it back (outcome `preempted`); the
server puts it first in its queue; alice's task runs on the GPU; then the borrower runs again,
starts from the saved step under a "resumed after preemption" separator, and completes.
"""
from __future__ import annotations

from tests.agent.test_preempt import TRAIN, _wait_line
from tests.agent_helpers import agent_env, create_task, make_repo, start_daemon, task_log, wait_status
from tests.helpers import Api, start_server


def test_a_quota_owner_preempts_a_borrower_that_resumes_from_its_checkpoint(tmp_path):
    ckpt = tmp_path / "ckpt.txt"
    repo, commit = make_repo(tmp_path / "repo", {"train.py": TRAIN.format(ckpt=str(ckpt), steps=40)})
    server = start_server(tmp_path / "server", env={"SHIPYARD_PREEMPT_INTERVAL_S": "0.3"})
    admin = server.api()
    key = admin.call("auth.create_credentials", {"role": "user", "label": "alice"})
    alice = Api(server.api_url, key["access_key"], key["secret_key"])
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="1", SHIPYARD_PREEMPT_GRACE_S="20")
    daemon = start_daemon(env, [], tmp_path / "d.log", "--gpus", "0", "--queue", "gpu=1")
    try:
        borrower = create_task(admin, "borrower", {"repository": str(repo), "version_num": commit,
                                                   "entry_point": "train.py"}, queue="gpu")
        _wait_line(admin, borrower, "step 5")
        admin.call("quotas.set", {"user": key["access_key"], "gpus": 1})
        mine = create_task(alice, "alice", {"repository": "", "entry_point": "p.py", "diff": "print('alice ran')\n"},
                           queue="gpu")
        done = wait_status(alice, mine, timeout=120)
        assert done["status"] == "completed", done.get("status_reason")
        finished = wait_status(admin, borrower, timeout=120)
        assert finished["status"] == "completed", finished.get("status_reason")
        lines = task_log(admin, borrower)
    finally:
        daemon.stop()
        server.stop()
    saved = int(next(line for line in lines if line.startswith("checkpoint at step")).split()[3])
    assert saved >= 5
    assert any(f"preempting: for {key['access_key']}'s task {mine}" in line and "SIGUSR1 sent" in line
               for line in lines), lines
    heading = next(line for line in lines if line.startswith("--- run") and "resumed after preemption" in line)
    assert f"starting at step {saved}" in lines[lines.index(heading):]
    assert "finished at step 40" in lines
    assert finished["runtime"]["preemptions"] == 1
