from __future__ import annotations

import pytest

from tests.browser import artifacts_dir, browser, page, pytest_runtest_makereport  # noqa: F401
from tests.helpers import start_server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real server process shared by the tests that only add data."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture()
def fresh_server(tmp_path):
    """A server of the test's own, for tests that restart, kill or fill it."""
    srv = start_server(tmp_path / "srv")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def replica_cluster(tmp_path_factory):
    """Two replicas on a private PostgreSQL behind nginx (tests/replicas.py), shared by the replica
    tests; a test that kills a replica starts it again."""
    from tests import replicas

    cluster = replicas.Cluster(tmp_path_factory.mktemp("replicas"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def api(server):
    return server.api()
