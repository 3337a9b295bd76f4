"""Quotas, the fair-share pop and preemption on a real server (two keys: the admin and a user).

The admin API (quotas.*: admin only, 400 naming the field), the pop order once a quota
exists (a guarantee goes first past another user's burst; queue order otherwise), the preemption
pass asking a borrower's agent to give its GPU back (status_message, status still in_progress),
and the agent's hand-back with outcome `preempted` (first in line, run not counted, preemption
counted in the runtime) - the hand-back is called here as the agent calls it.
"""
from __future__ import annotations

import time

import pytest

from tests.helpers import Api, ApiFailure, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("fair"), env={
        "SHIPYARD_GPU_CAPACITY": "2", "SHIPYARD_PREEMPT_INTERVAL_S": "0.2"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(srv):
    return srv.api()


@pytest.fixture(scope="module")
def alice(srv, admin):
    key = admin.call("auth.create_credentials", {"role": "user", "label": "alice"})
    api = Api(srv.api_url, key["access_key"], key["secret_key"])
    api.user = key["access_key"]
    return api


def _enqueue(api, queue: str, n: int, **fields) -> list[str]:
    ids = []
    for i in range(n):
        task = api.call("tasks.create", {"name": f"f{i}", "type": "training", **fields})["id"]
        api.call("tasks.enqueue", {"task": task, "queue_name": queue})
        ids.append(task)
    return ids


def _queue_id(api, name: str) -> str:
    return api.call("queues.get_all", {"name": f"^{name}$"})["queues"][0]["id"]


def _claim(api, queue: str, worker: str = "w1") -> dict:
    """Claim as an agent does, and start the task (tasks.started with the claim's attempt)."""
    got = api.call("queues.get_next_task", {"queue": _queue_id(api, queue), "lease_s": 60, "worker": worker})
    if got:
        api.call("tasks.started", {"task": got["entry"]["task"], "attempt": got["lease"]["attempt"]})
    return got


def test_quota_api_is_for_admins_and_names_bad_fields(admin, alice):
    with pytest.raises(ApiFailure) as denied:
        alice.call("quotas.set", {"user": alice.user, "gpus": 2})
    assert denied.value.code == 403
    for body, field in [({"user": "x", "gpus": -1}, "gpus"), ({"user": "x", "gpus": "two"}, "gpus"),
                        ({"gpus": 1}, "user"), ({"user": "x", "project": "p", "gpus": 1}, "project"),
                        ({"user": "x", "gpus": 1, "borrow": "maybe"}, "borrow")]:
        with pytest.raises(ApiFailure) as bad:
            admin.call("quotas.set", body)
        assert bad.value.code == 400 and f"'{field}'" in bad.value.msg, (body, bad.value.msg)
    admin.call("quotas.set", {"project": "p1", "gpus": 3, "borrow": False})
    rows = {r["entity"]: r for r in admin.call("quotas.get_all")["quotas"]}
    assert rows["project:p1"]["gpus"] == 3 and rows["project:p1"]["borrow"] is False
    assert rows["project:p1"]["source"] == "api" and rows["project:p1"]["project"] == "p1"
    assert admin.call("quotas.delete", {"project": "p1"})["deleted"] == 1
    assert "project:p1" not in {r["entity"] for r in admin.call("quotas.get_all")["quotas"]}


def test_guarantee_goes_first_then_fair_share_then_preemption(admin, alice):
    theirs = _enqueue(admin, "fq", 3)
    assert _claim(admin, "fq")["entry"]["task"] == theirs[0]        # no quota yet: plain FIFO
    assert _claim(admin, "fq")["entry"]["task"] == theirs[1]        # the admin now borrows both GPUs
    admin.call("quotas.set", {"user": alice.user, "gpus": 1})
    mine = _enqueue(alice, "fq", 1)[0]
    # the pool (gpu_capacity 2) is full of the admin's borrowed claims: the newest is asked to give one back
    victim = _wait_message(admin, theirs[1], "preempting")
    assert victim["status"] == "in_progress"
    assert victim["status_message"] == f"preempting: for {alice.user}'s task {mine}"
    assert admin.call("tasks.get_by_id", {"task": theirs[0]})["task"]["status_message"] != victim["status_message"]
    # its agent checkpoints it, stops it and hands it back, as agent/execution/lifecycle.py does
    attempt = victim["shipyard_attempts"][-1]["attempt"] if "shipyard_attempts" in victim else 1
    out = admin.call("tasks.release", {"task": theirs[1], "attempt": attempt, "retry": True,
                                       "reason": "preempted: gave its borrowed GPU back"})
    assert out["outcome"] == "requeued"
    # a second hand-back of the same claim (the agent's, after someone handed it back for it) is stale
    with pytest.raises(ApiFailure) as twice:
        admin.call("tasks.release", {"task": theirs[1], "attempt": attempt, "retry": True,
                                     "reason": "preempted: stopped after its checkpoint signal"})
    assert (twice.value.code, twice.value.subcode) == (400, 150)
    back = admin.call("tasks.get_by_id", {"task": theirs[1]})["task"]
    assert back["status"] == "queued" and back["status_message"] == f"preempted by {alice.user}'s task"
    assert back["runtime"]["preemptions"] == 1 and back["status_reason"].startswith("preempted:")
    entries = [e["task"] for e in admin.call("queues.get_by_id", {"queue": _queue_id(admin, "fq")})["queue"]["entries"]]
    assert entries[0] == theirs[1]                                   # first in line ...
    assert _claim(admin, "fq")["entry"]["task"] == mine               # ... after the guarantee that waited
    again = _claim(admin, "fq")
    assert again["entry"]["task"] == theirs[1]
    assert again["lease"]["attempt"] == attempt + 1
    runs = admin.call("tasks.get_by_id", {"task": theirs[1]})["task"]
    assert runs["status"] == "queued" or runs["shipyard_attempts"][-1]["run"] == 1   # the preempted run is not counted


def test_no_preemption_for_non_preemptible_and_no_borrowing_for_it(srv, admin, alice):
    queue = "fq2"
    fixed = _enqueue(admin, queue, 1, system_tags=["shipyard:non-preemptible"])[0]
    normal = _enqueue(admin, queue, 1)[0]
    # the admin has no guarantee: its non-preemptible task may not borrow, the other one may
    assert _claim(admin, queue)["entry"]["task"] == normal
    assert _claim(admin, queue) == {}
    rows = {r["entity"]: r for r in admin.call("quotas.get_all")["quotas"]}
    assert rows[f"user:{alice.user}"]["gpus"] == 1
    assert admin.call("tasks.get_by_id", {"task": fixed})["task"]["status"] == "queued"


def _wait_message(api, task: str, prefix: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = api.call("tasks.get_by_id", {"task": task})["task"]
        if str(doc.get("status_message") or "").startswith(prefix):
            return doc
        time.sleep(0.1)
    raise AssertionError(f"task {task}: status_message {doc.get('status_message')!r}, no {prefix!r}")


def test_quota_cli(srv, monkeypatch, capsys):
    from shipyard.cli import main

    for name, value in {**srv.env(), "HOME": str(srv.data_dir)}.items():
        monkeypatch.setenv(name, value)

    def cli(*args: str) -> tuple[int, str]:
        code = main(["quota", *args])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    assert cli("set", "--user", "bob", "--gpus", "2", "--no-borrow") == (0, "user:bob: 2 GPU(s) guaranteed, may not borrow\n")
    code, listed = cli("list")
    assert code == 0 and "user:bob" in listed and "no-borrow" in listed and "preemption on" in listed
    code, said = cli("set", "--gpus", "1")
    assert code != 0 and "--user" in said
    assert cli("delete", "--user", "bob") == (0, "user:bob: deleted\n")


def test_a_batch_claim_counts_each_claim_against_the_quota(srv, admin):
    """`count` pops under the same rules as one claim at a time: a user whose guarantee may not be
    passed (no borrowing) gets one claim of a batch of three, the rest wait in the queue."""
    key = admin.call("auth.create_credentials", {"role": "user", "label": "carol"})
    carol = Api(srv.api_url, key["access_key"], key["secret_key"])
    admin.call("quotas.set", {"user": key["access_key"], "gpus": 1, "borrow": False})
    mine = _enqueue(carol, "fq-batch", 3)
    queue = _queue_id(admin, "fq-batch")
    got = admin.call("queues.get_next_task", {"queue": queue, "lease_s": 60, "worker": "wb", "count": 3})["claims"]
    assert [c["entry"]["task"] for c in got] == mine[:1]
    assert admin.call("queues.get_num_entries", {"queue": queue})["num"] == 2
