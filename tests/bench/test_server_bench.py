"""Smoke test of bench/bench_server.py: its lean client speaks the protocol (checks envelopes,
keeps the connection across calls) and one short round of each measurement runs. The figures
themselves are not asserted (timing on a shared machine): `python bench/bench_server.py`."""
from __future__ import annotations

import pytest

from bench import bench_server as bench
from tests.helpers import Api


def test_lean_client_keeps_one_connection_and_checks_envelopes(server):
    api = Api(server.api_url)
    lean = bench.LeanApi(server.api_url, api.token)
    task = lean.call("tasks.create", {"name": "lean", "type": "training"})["id"]
    for _ in range(3):
        assert lean.call("tasks.get_by_id", {"task": task})["task"]["id"] == task
    with pytest.raises(RuntimeError, match="tasks.get_by_id"):
        lean.call("tasks.get_by_id", {"task": "0" * 32})
    assert lean.call("debug.ping", {}) is not None  # the connection survives an error answer


def test_one_short_round_of_each_measurement(server):
    rate, latencies, cpu_us, db_us = bench.pairs_per_second(server, 2, 0.5)
    assert rate > 0 and latencies and cpu_us > 0 and db_us == 0  # SQLite: no database process
    rate, _, _, _ = bench.pairs_per_second(server, 1, 0.3, lean=False)
    assert rate > 0
    assert len(bench.long_poll_wakeups(server, 2)) == 2


def test_the_floors_and_the_handlers_alone_are_measured(server, tmp_path):
    assert bench.sqlite_commit_rate(tmp_path, 0.2) > 0
    rate, cpu_us = bench.ping_rate(server, 2, 0.3)
    assert rate > 0 and cpu_us > 0
    assert len(bench.handler_cpu_us(None, 20)) == 5


def test_a_private_postgresql_reports_the_cpu_it_used():
    from tests import pg

    if not pg.available():
        pytest.skip("PostgreSQL binaries not installed (.ci/run installs them)")
    database = pg.PgServer()
    try:
        before = database.cpu_s()
        rate, _ = bench.pg_commit_rate(database.url, 2, 0.5)
        assert rate > 0 and database.cpu_s() > before
    finally:
        database.stop()
