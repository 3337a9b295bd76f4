"""The fair-share usage counters in the database (server/fairshare/usage.py), on a patched clock:
a claim counts as running for its user and project from its start, its GPU-seconds join the
decayed usage when it ends, and the running counters are corrected to what the leases say."""
from __future__ import annotations

import pytest

from server.fairshare import usage
from server.fairshare.policy import Quota
from server.storage.store import Store
from shipyard import clock

HOUR = 3600.0


@pytest.fixture()
def store(tmp_path):
    found = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield found
    found.close()


def test_claim_counts_while_running_and_decays_after(store, monkeypatch):
    settings = usage.FairSettings(half_life_s=HOUR)
    quotas = {"user:a": Quota(2)}
    doc = {"id": "t1", "user": "a", "project": "p", "_lease": {"worker": "w", "queue": "q"}}
    monkeypatch.setattr(clock, "now", lambda: 1000.0)
    with store.tx() as conn:
        usage.claim_started(conn, doc, 2, clock.now())
    assert doc["_lease"]["gpus"] == 2 and doc["_lease"]["since"] == 1000.0
    monkeypatch.setattr(clock, "now", lambda: 1000.0 + HOUR)
    with store.tx() as conn:
        now = usage.standings(conn, {"user:a", "project:p"}, quotas, settings, clock.now())
        assert now["user:a"].running == 2 and now["user:a"].usage == pytest.approx(2 * HOUR)
        assert now["user:a"].guarantee == 2 and now["project:p"].guarantee == 0
        usage.claim_ended(conn, doc, settings.half_life_s)
    monkeypatch.setattr(clock, "now", lambda: 1000.0 + 2 * HOUR)
    with store.tx() as conn:
        later = usage.standings(conn, {"user:a", "project:p"}, quotas, settings, clock.now())
    assert later["user:a"].running == 0
    assert later["user:a"].usage == pytest.approx(HOUR)          # 2 GPU-hours, one half-life ago
    assert later["project:p"].usage == pytest.approx(HOUR)


def test_running_counters_follow_the_leases(store, monkeypatch):
    monkeypatch.setattr(clock, "now", lambda: 50.0)
    with store.tx() as conn:
        usage.claim_started(conn, {"id": "t", "user": "a", "_lease": {}}, 3, 10.0)
        usage.set_running(conn, {"user:b": (1, 40.0)})          # a's claim ended unseen; b's is running
        found = usage.standings(conn, {"user:a", "user:b"}, {}, usage.FairSettings(), 50.0)
    assert found["user:a"].running == 0 and found["user:b"].running == 1
    assert found["user:b"].usage == pytest.approx(10.0)


@pytest.mark.parametrize("doc, quotas, expected", [
    ({"user": "a", "project": "p"}, {}, "user:a"),
    ({"user": "a", "project": "p"}, {"project:p": Quota(1)}, "project:p"),
    ({"user": "a"}, {"project:p": Quota(1)}, "user:a"),
])
def test_a_task_counts_against_its_project_when_that_has_a_quota(doc, quotas, expected):
    assert usage.entity_of(doc, quotas) == expected


@pytest.mark.parametrize("doc, gpus, preemptible", [
    ({}, 1, True),
    ({"hyperparams": {"Shipyard": {"gpus": {"value": "4"}}}}, 4, True),
    ({"hyperparams": {"Shipyard": {"gpus": {"value": "x"}}}}, 1, True),
    ({"system_tags": ["shipyard:non-preemptible"]}, 1, False),
    ({"tags": ["shipyard:non-preemptible"]}, 1, False),
])
def test_task_gpus_and_preemptible(doc, gpus, preemptible):
    assert usage.task_gpus(doc) == gpus and usage.preemptible(doc) is preemptible


def test_quota_setting_parses_and_names_itself_when_wrong():
    from server.config import load_server_config, parse_quotas
    from shipyard.errors import ConfigError

    assert parse_quotas("alice=2, project:p1=4:no-borrow,user:bob=0:borrow") == {
        "user:alice": (2, True), "project:p1": (4, False), "user:bob": (0, True)}
    for bad in ("alice=two", "alice=2:maybe", "team:x=1", "=2"):
        with pytest.raises(ConfigError, match="'quotas'"):
            parse_quotas(bad)
    with pytest.raises(ConfigError, match="'preemption'"):
        load_server_config(env={"SHIPYARD_PREEMPTION": "sometimes"})
    assert load_server_config(env={"SHIPYARD_QUOTAS": "a=1"}).quotas == "a=1"
