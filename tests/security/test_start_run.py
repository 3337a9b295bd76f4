"""`tasks.start_run` (shipyard.protocol.START_RUN): a claim marked started and its run's key minted
in one call, under the rules of both calls it replaces (a real server, real HTTP).

It mints only for a caller that may mint task keys (admin, agent), only for the task's current,
leased claim, and a refusal changes nothing: no status change, no key.
"""
from __future__ import annotations

import sqlite3

import pytest

from shipyard.protocol import START_RUN, Subcode
from tests.helpers import Api, ApiFailure


def _claimed(api: Api, name: str) -> tuple[str, int]:
    """A task enqueued and claimed with a lease: (its id, the claim's attempt)."""
    queue = api.call("queues.create", {"name": name})["id"]
    task = api.call("tasks.create", {"name": name, "type": "training"})["id"]
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    answer = api.call("queues.get_next_task", {"queue": queue, "lease_s": 60, "worker": "start-run-test"})
    return task, answer["lease"]["attempt"]


def _status(api: Api, task: str) -> tuple[str, str]:
    row = api.call("tasks.get_all", {"id": [task], "only_fields": ["status", "status_message"]})["tasks"][0]
    return row["status"], row.get("status_message") or ""


def _minted_for(server, *tasks: str) -> int:
    """Task keys labelled with these tasks, read from the server's SQLite file (-1 on another database)."""
    db = server.data_dir / "shipyard.db"
    if not db.is_file():
        return -1
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(tasks))
        return conn.execute(f"SELECT count(*) FROM credentials WHERE instance IN ({marks})", tasks).fetchone()[0]


def test_it_is_advertised_with_the_task_keys(api):
    assert api.call("server.info")["shipyard"]["extensions"]["task_keys"]["start"] == START_RUN


def test_an_agent_starts_its_claim_and_gets_a_task_key_that_works(server, api):
    agent = api.call("auth.create_credentials", {"role": "agent", "label": "start-run-agent", "expires_in_s": 600})
    as_agent = Api(server.api_url, agent["access_key"], agent["secret_key"])
    task, attempt = _claimed(api, "start-run-ok")
    answer = as_agent.call(START_RUN, {"task": task, "attempt": attempt, "status_message": "submitting to slurm",
                                       "force": True, "expires_in_s": 120})
    assert answer["role"] == "task" and answer["label"] == task and answer["started"] == 1
    assert _status(api, task) == ("in_progress", "submitting to slurm")
    assert _minted_for(server, task) in (1, -1)
    as_task = Api(server.api_url, answer["access_key"], answer["secret_key"])
    assert as_task.call("users.get_current_user")["user"]["role"] == "task"
    with pytest.raises(ApiFailure) as err:    # a task key still mints nothing
        as_task.call("auth.create_credentials", {"role": "task"})
    assert err.value.code == 403
    assert as_agent.call("auth.revoke_credentials", {"access_key": answer["access_key"]}) == {"revoked": 1}


@pytest.mark.parametrize("role", ["user", "task"])
def test_a_key_that_may_not_mint_starts_nothing(server, api, role):
    holder = api.call("auth.create_credentials", {"role": role, "label": f"start-run-{role}", "expires_in_s": 600})
    caller = Api(server.api_url, holder["access_key"], holder["secret_key"])
    task, attempt = _claimed(api, f"start-run-{role}")
    with pytest.raises(ApiFailure) as err:
        caller.call(START_RUN, {"task": task, "attempt": attempt, "status_message": "stolen"})
    assert err.value.code == 403
    assert _status(api, task)[1] != "stolen"
    assert _minted_for(server, task) in (0, -1)


def test_a_superseded_or_unleased_claim_gets_no_key(server, api):
    agent = api.call("auth.create_credentials", {"role": "agent", "label": "start-run-fence", "expires_in_s": 600})
    as_agent = Api(server.api_url, agent["access_key"], agent["secret_key"])
    task, attempt = _claimed(api, "start-run-fence")
    with pytest.raises(ApiFailure) as err:       # an older attempt
        as_agent.call(START_RUN, {"task": task, "attempt": attempt + 1, "status_message": "stale"})
    assert (err.value.code, err.value.subcode) == (400, Subcode.STALE_CLAIM)
    with pytest.raises(ApiFailure) as err:       # no attempt at all: minting is for a claim's holder
        as_agent.call(START_RUN, {"task": task, "status_message": "unfenced"})
    assert err.value.code == 400 and "attempt" in err.value.msg
    api.call("tasks.release", {"task": task, "attempt": attempt, "retry": False, "reason": "test"})
    unleased = api.call("tasks.create", {"name": "never claimed", "type": "training"})["id"]
    with pytest.raises(ApiFailure) as err:       # a task nobody claimed
        as_agent.call(START_RUN, {"task": unleased, "attempt": 0, "status_message": "unleased"})
    assert err.value.code == 400
    assert _status(api, task)[1] not in ("stale", "unfenced") and _status(api, unleased)[1] != "unleased"
    assert _minted_for(server, task, unleased) in (0, -1)   # no key for either


def test_several_claims_start_in_one_call_and_a_superseded_one_fails_alone(server, api):
    from shipyard.protocol import START_RUNS

    (a, first), (b, second) = _claimed(api, "start-runs-a"), _claimed(api, "start-runs-b")
    answer = api.call(START_RUN, {START_RUNS: [{"task": a, "attempt": first}, {"task": b, "attempt": second + 1}],
                                  "status_message": "submitting to slurm", "force": True, "expires_in_s": 120})
    ok, stale = answer[START_RUNS]
    assert ok["task"] == a and ok["role"] == "task" and ok["label"] == a and ok["secret_key"]
    assert stale["task"] == b and stale["error"]["subcode"] == Subcode.STALE_CLAIM
    assert _status(api, a) == ("in_progress", "submitting to slurm") and _status(api, b)[0] != "in_progress"
    assert _minted_for(server, b) in (0, -1)
    assert api.call("server.info")["shipyard"]["extensions"]["task_keys"]["start_many"] == START_RUNS
    for bad in ([], "x", [{"task": a}], [{"task": a, "attempt": "1"}]):
        with pytest.raises(ApiFailure) as refused:
            api.call(START_RUN, {START_RUNS: bad})
        assert refused.value.code == 400 and f"'{START_RUNS}'" in refused.value.msg
