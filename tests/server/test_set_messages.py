"""`tasks.set_messages` (Shipyard's, shipyard.protocol.SET_MESSAGES): the cluster glue's pending
reasons, many per call, each a compare-and-set - written only where the claim still holds the task
and the message is still the one the glue wrote, so a stop request is never overwritten."""
from __future__ import annotations

import pytest

from shipyard.protocol import SET_MESSAGES
from tests.helpers import ApiFailure


def _running(api, name: str, n: int) -> list[dict]:
    """`n` tasks claimed with a lease and started with the glue's first message."""
    queue = api.call("queues.create", {"name": name})["id"]
    for i in range(n):
        task = api.call("tasks.create", {"name": f"{name}-{i}", "type": "training"})["id"]
        api.call("tasks.enqueue", {"task": task, "queue": queue})
    claims = api.call("queues.get_next_task", {"queue": queue, "lease_s": 60, "worker": "glue", "count": n})["claims"]
    for claim in claims:
        api.call("tasks.started", {"task": claim["entry"]["task"], "attempt": claim["lease"]["attempt"],
                                   "status_message": "submitting to slurm"})
    return [{"task": c["entry"]["task"], "attempt": c["lease"]["attempt"]} for c in claims]


def _message(api, task: str) -> str:
    return api.call("tasks.get_by_id", {"task": task})["task"]["status_message"]


def test_messages_are_set_together_where_they_are_still_the_glues(api):
    a, b, c, d = _running(api, "messages", 4)
    api.call("tasks.stop", {"task": b["task"]})                       # a stop request landed meanwhile
    items = [{**a, "status_message": "pending in slurm job 1: Priority", "expect": "submitting to slurm"},
             {**b, "status_message": "pending in slurm job 2: Priority", "expect": "submitting to slurm"},
             {**c, "status_message": "pending in slurm job 3: Priority", "expect": "something else"},
             {**d, "attempt": d["attempt"] + 1, "status_message": "pending in slurm job 4", "expect": "submitting to slurm"}]
    assert api.call(SET_MESSAGES, {"tasks": items})["updated"] == [a["task"]]
    assert _message(api, a["task"]) == "pending in slurm job 1: Priority"
    assert not _message(api, b["task"]).startswith("pending")          # the stop is never overwritten
    assert _message(api, c["task"]) == _message(api, d["task"]) == "submitting to slurm"
    doc = api.call("tasks.get_by_id", {"task": a["task"]})["task"]
    assert doc["status"] == "in_progress"
    assert "status_messages" in api.call("server.info")["shipyard"]["extensions"]


@pytest.mark.parametrize("body, field", [({}, "tasks"), ({"tasks": "x"}, "tasks"),
                                         ({"tasks": [{"task": "t", "attempt": 1, "status_message": "m"}]}, "expect"),
                                         ({"tasks": [{"task": "t", "attempt": "one", "status_message": "m",
                                                      "expect": ""}]}, "attempt")])
def test_a_bad_body_is_refused_naming_the_field(api, body, field):
    with pytest.raises(ApiFailure) as refused:
        api.call(SET_MESSAGES, body)
    assert refused.value.code == 400 and field in str(refused.value)
