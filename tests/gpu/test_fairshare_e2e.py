"""Fair share end to end: a real server, a real daemon on the fake-GPU inventory (2 GPUs), two keys.

The admin's burst fills both GPUs (borrowed: it has no quota); alice has a guarantee of 1 GPU. Her
task makes the server ask the newest borrower to preempt (status_message, still in_progress). The
daemon hears the request at once (the status long-poll), signals the task (SIGUSR1 ends this one,
which keeps no checkpoint) and hands it back with outcome `preempted`; should the test see the
request first, it sends that hand-back itself, as the agent does (tasks.release with the claim's
attempt), and whichever comes second gets a stale-claim answer. The free GPU goes to alice's task,
which runs; the preempted task is back first in line with its preemption counted.
"""
from __future__ import annotations

import contextlib
import time

from tests.agent_helpers import agent_env, create_task, start_daemon, wait_status
from tests.helpers import Api, ApiFailure, start_server

LONG = "import time\ntime.sleep(300)\n"
SHORT = "print('alice ran')\n"


def _task(api, task: str) -> dict:
    return api.call("tasks.get_by_id", {"task": task})["task"]


def _until(what, timeout: float = 90.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


def test_a_guarantee_preempts_a_borrower_on_real_daemons(tmp_path):
    server = start_server(tmp_path / "server", env={"SHIPYARD_PREEMPT_INTERVAL_S": "0.3"})
    admin = server.api()
    key = admin.call("auth.create_credentials", {"role": "user", "label": "alice"})
    alice = Api(server.api_url, key["access_key"], key["secret_key"])
    env = agent_env(server, tmp_path, SHIPYARD_FAKE_GPUS="2", SHIPYARD_LEASE_S="8")
    daemon = start_daemon(env, [], tmp_path / "d.log", "--gpus", "0-1", "--queue", "gpu=1")
    try:
        burst = [create_task(admin, f"burst-{i}", {"repository": "", "entry_point": "p.py", "diff": LONG},
                             queue="gpu") for i in range(3)]

        def two_running():
            docs = [_task(admin, t) for t in burst]
            running = [d for d in docs if d["status"] == "in_progress"]
            return running if len(running) == 2 else None
        running = _until(two_running)
        admin.call("quotas.set", {"user": key["access_key"], "gpus": 1})
        mine = create_task(alice, "alice", {"repository": "", "entry_point": "p.py", "diff": SHORT}, queue="gpu")

        def asked():
            # The preemption's messages, or its durable marks: on a fast host the whole round trip
            # (asked, handed back, alice's 0.1 s task run, the victim claimed again) can fit
            # between two looks, and the messages are gone by then.
            docs = [_task(admin, d["id"]) for d in running]
            return [d for d in docs if str(d.get("status_message") or "").startswith(("preempting", "preempted by"))
                    or (d.get("runtime") or {}).get("preemptions")]
        victims = _until(asked, timeout=30)
        assert len(victims) == 1
        victim = victims[0]
        newest = max(running, key=lambda d: d["shipyard_attempts"][-1]["claimed"])
        assert victim["id"] == newest["id"]
        attempt = newest["shipyard_attempts"][-1]["attempt"]
        if victim["status_message"].startswith("preempting") and victim["status"] == "in_progress":
            # seen before the agent handed it back
            assert victim["status"] == "in_progress"
            assert victim["status_message"] == f"preempting: for {key['access_key']}'s task {mine}"
            try:
                admin.call("tasks.release", {"task": victim["id"], "attempt": attempt, "retry": True,
                                             "reason": "preempted: stopped after its checkpoint signal"})
            except ApiFailure as exc:
                assert exc.subcode == 150, exc   # the agent got there first
        back = _until(lambda: (lambda d: d if (d.get("runtime") or {}).get("preemptions") else None)(
            _task(admin, victim["id"])), timeout=60)
        assert back["runtime"]["preemptions"] == 1
        ended = next(a for a in back["shipyard_attempts"] if a["attempt"] == attempt)
        assert ended["end"].startswith("preempted"), ended   # handed back, not failed or aborted
        if back["status"] == "queued":   # not claimed again yet: the message says by whom
            assert back["status_message"] == f"preempted by {key['access_key']}'s task"
        done = wait_status(alice, mine, timeout=120)
        assert done["status"] == "completed", done.get("status_reason")
        # the preempted task keeps its place: it is the next to run, before the third of the burst
        third = next(t for t in burst if t not in {d["id"] for d in running})

        def rerun():
            doc = _task(admin, victim["id"])
            return doc if doc["status"] == "in_progress" and doc["shipyard_attempts"][-1]["attempt"] > attempt else None
        again = _until(rerun)
        assert _task(admin, third)["status"] == "queued"
        assert again["runtime"]["preemptions"] == 1
        assert again["shipyard_attempts"][-1]["run"] == newest["shipyard_attempts"][-1]["run"]   # not a failed try
    except AssertionError:
        print("--- the daemon's log, last 80 lines ---")   # shown by pytest with the failure (a race's trace)
        print("\n".join((tmp_path / "d.log").read_text(errors="replace").splitlines()[-80:]))
        raise
    finally:
        for task in burst:
            with contextlib.suppress(Exception):   # best effort before the daemon stops
                admin.call("tasks.stop", {"task": task, "force": True})
        daemon.stop()
        server.stop()
