"""The task table's query on PostgreSQL: the same tests as test_tasks_query.py (JSON fragments
and ordering are read differently there: no SQL-side order, other JSON operators)."""
from __future__ import annotations

import pytest

from tests import pg
from tests.helpers import start_server
from tests.server.test_task_metrics import test_a_page_spans_valued_and_missing_tasks_in_order  # noqa: F401 - run on PostgreSQL too
from tests.server.test_tasks_query import (  # noqa: F401 - collected here against PostgreSQL
    project,
    test_date_ranges_on_created_started_and_last_update,
    test_hyperparameters_order_numerically,
    test_list_operators_in_status_type_and_tags,
    test_metric_ranges_and_hyperparameter_values_filter,
    test_only_fields_join_references_and_people,
    test_order_by_a_metrics_text_field_is_ordered_not_refused,
    test_order_by_metric_puts_missing_last_both_ways,
    test_scroll_pages_every_task_once_then_refresh_rereads,
    test_sql_ordered_pages_match_the_python_order,
)

pytestmark = pytest.mark.skipif(not pg.available(), reason="PostgreSQL binaries not installed (.ci/run installs them)")


@pytest.fixture(scope="module")
def api(pg_cluster, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("pgq"), db=pg_cluster.new_database("shipyard_tasks"))
    yield srv.api()
    srv.stop()
