"""tasks.get_all_ex / get_by_id_ex / get_all against a running server: scroll paging, joined
references, people as {id, name}, ordering and the list-field filter language."""
from __future__ import annotations

import uuid

import pytest

from tests.helpers import ACCESS_KEY, ApiFailure


def make_task(api, name="t", **fields):
    return api.call("tasks.create", {"name": name, "type": "training", **fields})["id"]


@pytest.fixture()
def project(api):
    return api.call("projects.create", {"name": f"q-{uuid.uuid4().hex[:8]}"})["id"]


def ex(api, project, **body):
    return api.call("tasks.get_all_ex", {"project": [project], **body})


def ids(api, project, **body):
    return [t["id"] for t in ex(api, project, **body)["tasks"]]


def bad_field(api, endpoint, body, field):
    with pytest.raises(ApiFailure) as err:
        api.call(endpoint, body)
    assert err.value.code == 400, err.value.msg
    assert field in err.value.msg
    return err.value


def test_scroll_pages_every_task_once_then_refresh_rereads(api, project):
    made = {make_task(api, f"s-{i}", project=project) for i in range(7)}
    first = ex(api, project, size=3, scroll_id=None, order_by=["name"])
    seen = [t["id"] for t in first["tasks"]]
    scroll = first["scroll_id"]
    while True:
        page = ex(api, project, size=3, scroll_id=scroll, order_by=["name"])
        if not page["tasks"]:
            break
        seen += [t["id"] for t in page["tasks"]]
        scroll = page["scroll_id"]
    assert len(seen) == len(set(seen)) == 7 and set(seen) == made
    again = ex(api, project, size=3, scroll_id=scroll, refresh_scroll=True, order_by=["name"])
    assert [t["id"] for t in again["tasks"]] == seen


def test_scroll_without_order_is_stable_and_bad_scroll_is_named(api, project):
    for i in range(4):
        make_task(api, f"u-{i}", project=project)
    a = ex(api, project, size=2)
    b = ex(api, project, size=2, scroll_id=a["scroll_id"])
    assert not {t["id"] for t in a["tasks"]} & {t["id"] for t in b["tasks"]}
    err = bad_field(api, "tasks.get_all_ex", {"scroll_id": "not-a-scroll"}, "scroll_id")
    assert err.subcode in (12, 1104)
    bad_field(api, "tasks.get_all_ex", {"scroll_id": a["scroll_id"], "size": 0}, "size")


def test_only_fields_join_references_and_people(api, project):
    queue = api.call("queues.create", {"name": f"jq-{uuid.uuid4().hex[:6]}"})["id"]
    parent = make_task(api, "parent-task", project=project)
    model = api.call("models.create", {"name": "in-model", "uri": "file:///m.bin"})["id"]
    task = make_task(api, "child", project=project, parent=parent,
                     models={"input": [{"name": "w", "model": model}]})
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    only = ["name", "project.name", "parent.name", "execution.queue.name", "models.input.model.name",
            "user.name", "company"]
    [row] = api.call("tasks.get_all_ex", {"id": [task], "only_fields": only})["tasks"]
    proj_name = api.call("projects.get_by_id", {"project": project})["project"]["name"]
    assert row["project"] == {"id": project, "name": proj_name}
    assert row["parent"] == {"id": parent, "name": "parent-task"}
    assert row["execution"]["queue"]["id"] == queue and row["execution"]["queue"]["name"].startswith("jq-")
    assert row["models"]["input"][0]["model"] == {"id": model, "name": "in-model"}
    assert row["user"]["id"] == ACCESS_KEY and row["user"]["name"]
    assert set(row["company"]) == {"id", "name"}
    assert "status" not in row


def test_star_and_by_id_ex_keep_everything_with_reference_objects(api, project):
    task = make_task(api, "star", project=project, comment="c")
    [row] = api.call("tasks.get_by_id_ex", {"id": [task], "only_fields": ["*"]})["tasks"]
    assert row["comment"] == "c" and row["project"] == {"id": project}
    assert isinstance(row["user"], dict) and row["user"]["id"] == ACCESS_KEY
    plain = api.call("tasks.get_all", {"id": [task]})["tasks"][0]
    assert plain["user"] == ACCESS_KEY and plain["project"] == project  # the plain get_all keeps ids
    bad_field(api, "tasks.get_by_id_ex", {}, "id")


def _metric(api, task, value):
    api.events([{"type": "training_stats_scalar", "task": task, "metric": "loss", "variant": "total",
                 "value": value, "iter": 1, "timestamp": 1}])


def test_order_by_metric_puts_missing_last_both_ways(api, project):
    low, high, none = (make_task(api, n, project=project) for n in ("low", "high", "none"))
    _metric(api, low, 0.5)
    _metric(api, high, 10.0)
    row = api.call("tasks.get_all_ex", {"id": [low], "only_fields": ["last_metrics"]})["tasks"][0]
    metric = next(iter(row["last_metrics"]))
    variant = next(iter(row["last_metrics"][metric]))
    key = f"last_metrics.{metric}.{variant}.value"
    assert ids(api, project, order_by=[key]) == [low, high, none]
    assert ids(api, project, order_by=["-" + key]) == [high, low, none]


def test_order_by_a_path_sql_cannot_hold_is_ordered_in_python_not_a_500(api, project):
    """A control character or lone surrogate in an order_by path made SQLite's JSON path fail (a
    500 the fuzz found through reports.get_task_data); such a path is read in Python instead."""
    low, high = (make_task(api, n, project=project) for n in ("low", "high"))
    _metric(api, low, 0.5)
    _metric(api, high, 10.0)
    for endpoint in ("tasks.get_all_ex", "reports.get_task_data"):
        for path in ("-last_metrics.m\u0000.v.value", "hyperparams.a\ud800.b.value", "name\u0001"):
            api.call(endpoint, {"project": [project], "order_by": [path], "only_fields": ["id"]})


def test_hyperparameters_order_numerically(api, project):
    def hp(value):
        return {"Args": {"lr": {"section": "Args", "name": "lr", "value": value}}}

    a, b, c = (make_task(api, v, project=project, hyperparams=hp(v)) for v in ("0.01", "1e-4", "2"))
    assert ids(api, project, order_by=["hyperparams.Args.lr.value"]) == [b, a, c]


def test_list_operators_in_status_type_and_tags(api, project):
    a = make_task(api, "a", project=project, tags=["x", "y"])
    b = make_task(api, "b", project=project, tags=["y"], type="testing")
    c = make_task(api, "c", project=project)
    api.call("tasks.started", {"task": c})

    def got(**body):
        return set(ids(api, project, **body))

    assert got(status=["__$not", "in_progress"]) == {a, b}
    assert got(type=["__$not", "testing"]) == {a, c}
    assert got(tags=["__$all", "x", "y"]) == {a}
    assert got(tags=["__$any", "x", "y"]) == {a, b}
    assert got(tags=["__$not", "x"]) == {b, c}
    assert got(tags=[None]) == {c}
    assert got(tags=["x", None]) == {a, c}
    assert got(status=["__$any", "created", "__$not", "in_progress"]) == {a, b}
    assert got(filters={"tags": {"any": {"include": [None]}}}) == {c}
    assert got(filters={"tags": {"all": {"include": ["y"], "exclude": ["x"]}}}) == {b}


def test_date_ranges_on_created_started_and_last_update(api, project):
    a = make_task(api, "dated", project=project)
    api.call("tasks.started", {"task": a})
    make_task(api, "undated", project=project)
    assert set(ids(api, project, started=[">=2000-01-01T00:00:00"])) == {a}
    assert set(ids(api, project, started=["2000-01-01T00:00:00", None])) == {a}
    assert len(ids(api, project, created=[">=2000-01-01T00:00:00", "<2999-01-01T00:00:00"])) == 2
    assert ids(api, project, last_update=["<2000-01-01T00:00:00"]) == []


@pytest.mark.parametrize(("body", "field"), [
    ({"status": ["__$not"]}, "status"),
    ({"type": ["__$xor", "a"]}, "type"),
    ({"tags": [5]}, "tags"),
    ({"filters": {"tags": {"any": {"include": "x"}}}}, "tags"),
    ({"filters": {"tags": {"op": "xor"}}}, "op"),
    ({"created": ["yesterday", None]}, "created"),
    ({"size": "many", "scroll_id": None}, "size"),
])
def test_invalid_filters_are_a_400_naming_the_field(api, body, field):
    bad_field(api, "tasks.get_all_ex", body, field)


def test_sql_ordered_pages_match_the_python_order(api, project):
    """One order key is ordered by SQLite; a second key (the id tiebreak, spelled out) makes the
    server order in Python: the two must agree, nulls and ties included."""
    made = [make_task(api, name, project=project, comment=comment)
            for name, comment in (("b", "x"), ("a", None), ("c", "x"), ("a", "y"), ("d", None))]
    for key in ("name", "-name", "comment", "-comment", "created", "-last_update"):
        by_sql = ids(api, project, order_by=[key])
        by_python = ids(api, project, order_by=[key, "id"])
        assert by_sql == by_python and set(by_sql) == set(made), key
        paged = ex(api, project, order_by=[key], page=1, page_size=2)["tasks"]
        assert [t["id"] for t in paged] == by_python[2:4]


def test_include_subprojects_and_a_null_scroll_id_without_size(api):
    top = f"sub-{uuid.uuid4().hex[:6]}"
    parent = api.call("projects.create", {"name": top})["id"]
    child = api.call("projects.create", {"name": f"{top}/child"})["id"]
    a, b = make_task(api, project=parent), make_task(api, project=child)
    assert set(ids(api, parent)) == {a}
    assert set(ids(api, parent, include_subprojects=True)) == {a, b}
    assert "scroll_id" not in ex(api, parent, scroll_id=None)  # a null scroll id alone does not scroll


def test_metric_ranges_and_hyperparameter_values_filter(api, project):
    low, high, none = (make_task(api, n, project=project, hyperparams={
        "Args": {"opt": {"section": "Args", "name": "opt", "value": n}}}) for n in ("low", "high", "none"))
    _metric(api, low, 0.5)
    _metric(api, high, 10.0)
    row = api.call("tasks.get_all_ex", {"id": [low], "only_fields": ["last_metrics"]})["tasks"][0]
    metric = next(iter(row["last_metrics"]))
    key = f"last_metrics.{metric}.{next(iter(row['last_metrics'][metric]))}.value"
    assert set(ids(api, project, **{key: [1, None]})) == {high}
    assert set(ids(api, project, **{key: [None, 1]})) == {low, none}  # an open min takes missing values
    assert set(ids(api, project, **{"hyperparams.Args.opt.value": ["__$not", "low"]})) == {high, none}
    bad_field(api, "tasks.get_all_ex", {key: [None, None]}, key)
    bad_field(api, "tasks.get_all_ex", {"last_iteration": "5"}, "last_iteration")


def test_order_by_a_metrics_text_field_is_ordered_not_refused(api, project):
    """`last_metrics.<m>.<v>.metric` is text: ordered in Python (a float cast in SQL would fail)."""
    a, b = make_task(api, "ma", project=project), make_task(api, "mb", project=project)
    _metric(api, a, 1.0)
    _metric(api, b, 2.0)
    row = api.call("tasks.get_all_ex", {"id": [a], "only_fields": ["last_metrics"]})["tasks"][0]
    metric = next(iter(row["last_metrics"]))
    key = f"last_metrics.{metric}.{next(iter(row['last_metrics'][metric]))}.metric"
    assert set(ids(api, project, order_by=[key])) == {a, b}
