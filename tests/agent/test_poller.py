"""Claim logic (pure): priority vs round-robin, long-poll vs interval polling, queue resolution."""
from __future__ import annotations

import threading

import pytest

from agent.daemon.poller import Queue, TaskSource, resolve_queues
from shipyard.errors import ConfigError


class FakeApi:
    """Queues as lists; records calls. `long_poll` decides what server.info advertises."""

    def __init__(self, queues: dict[str, list[str]], long_poll: bool):
        self.queues = queues
        self.long_poll = long_poll
        self.calls: list[tuple[str, dict]] = []

    def server_info(self) -> dict:
        return {"shipyard": {"extensions": {"long_poll": {}}}} if self.long_poll else {}

    def call(self, endpoint: str, data: dict | None = None, **_kw) -> dict:
        data = data or {}
        self.calls.append((endpoint, data))
        if endpoint == "queues.get_next_task":
            for qid in data.get("queues") or [data["queue"]]:
                if self.queues.get(qid):
                    return {"entry": {"task": self.queues[qid].pop(0)}, "queue": qid}
            return {}
        if endpoint == "queues.get_all":
            name = data["name"].strip("^$").replace("\\", "")
            return {"queues": [{"id": qid, "name": qid} for qid in self.queues if qid == name]}
        if endpoint == "queues.create":
            self.queues[data["name"]] = []
            return {"id": data["name"]}
        if endpoint == "queues.get_default":
            return {"id": "default", "name": "default"}
        raise AssertionError(endpoint)


QUEUES = [Queue("high", "high"), Queue("low", "low")]


@pytest.mark.parametrize("long_poll", [True, False])
@pytest.mark.parametrize("fair,expected", [
    (False, ["h1", "h2", "h3", "l1", "l2"]),
    (True, ["h1", "l1", "h2", "l2", "h3"]),
])
def test_priority_and_fairness(long_poll, fair, expected):
    api = FakeApi({"high": ["h1", "h2", "h3"], "low": ["l1", "l2"]}, long_poll)
    source = TaskSource(api, list(QUEUES), order_fairness=fair, poll_interval_s=0.01, long_poll_s=0.01)
    got = [source.next().task_id for _ in range(5)]
    assert got == expected


def test_polling_mode_uses_only_documented_calls():
    api = FakeApi({"high": [], "low": []}, long_poll=False)
    stop = threading.Event()
    source = TaskSource(api, list(QUEUES), poll_interval_s=0.01, stop=stop)
    assert source.next() is None
    assert {e for e, _ in api.calls} == {"queues.get_next_task"}
    assert all("wait_s" not in body and "queues" not in body for _, body in api.calls)


def test_long_poll_sends_all_queues_in_order():
    api = FakeApi({"high": [], "low": ["l1"]}, long_poll=True)
    source = TaskSource(api, list(QUEUES), long_poll_s=5)
    claim = source.next()
    assert claim.task_id == "l1" and claim.queue.name == "low"
    body = api.calls[-1][1]
    assert body["queues"] == ["high", "low"] and body["wait_s"] == 5


def test_resolve_queues():
    api = FakeApi({"gpu": []}, long_poll=True)
    assert resolve_queues(api, ["gpu"]) == [Queue("gpu", "gpu")]
    assert resolve_queues(api, []) == [Queue("default", "default")]
    with pytest.raises(ConfigError, match="--create-queue"):
        resolve_queues(api, ["missing"])
    assert resolve_queues(api, ["missing"], create=True) == [Queue("missing", "missing")]
