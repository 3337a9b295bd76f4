"""The projects family's server tests again on PostgreSQL: the grouped stats query, the JSON
parts the distinct-value queries extract and the subtree writes are dialect-sensitive."""
from __future__ import annotations

import pytest

from tests import pg
from tests.helpers import start_server

# Collected here again with this module's `api` (a server on PostgreSQL), fixtures included.
from tests.server.test_projects_queries import *  # noqa: F403 (re-run on PostgreSQL)
from tests.server.test_projects_stats import (  # noqa: F401 (re-run on PostgreSQL)
    stats_tree,  # noqa: F401 (their fixture)
    test_active_users_lists_projects_with_their_tasks,
    test_children_type_lists_only_projects_holding_pipelines,
    test_dataset_stats_come_from_the_latest_version,
    test_own_contents_parent_object_and_shallow_search,
    test_stats_cover_the_project_and_its_subprojects,
    test_stats_filter_of_the_wrong_type_is_a_400_naming_it,
    test_stats_filter_on_status,
    test_stats_for_state_and_without_children,
)
from tests.server.test_projects_tree import *  # noqa: F403 (re-run on PostgreSQL)

pytestmark = pytest.mark.skipif(not pg.available(), reason="PostgreSQL binaries not installed (.ci/run installs them)")


@pytest.fixture(scope="module")
def api(pg_cluster, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("pgsrv"), db=pg_cluster.new_database("shipyard_projects"))
    yield srv.api()
    srv.stop()
