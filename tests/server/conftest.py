"""Fixtures shared by the server tests on PostgreSQL, and by those that run one scenario on both stores.

    def test_x(pg_cluster): ...     # a private PostgreSQL (tests/pg.py) shared by this worker's
                                    # server tests; make a database of your own with
                                    # pg_cluster.new_database(name) (skipped without PostgreSQL)
    def test_x(database_url): ...   # runs twice: [sqlite] a file in tmp_path, [postgresql] a fresh
                                    # database in that PostgreSQL

A test that stops or restarts PostgreSQL (tests/server/test_pg_restart_pipelined.py) starts its own.
"""
from __future__ import annotations

import itertools

import pytest

from tests import pg

_DATABASES = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster():
    if not pg.available():
        pytest.skip("PostgreSQL binaries not installed (.ci/run installs them)")
    server = pg.PgServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("pg_cluster").new_database(f"db_{next(_DATABASES)}")
