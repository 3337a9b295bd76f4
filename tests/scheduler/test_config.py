"""The scheduler config file: the documented example loads; mistakes are ConfigErrors that say where."""
from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.config import load_config, parse_config
from shipyard import clock
from shipyard.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "scheduler.conf"
TASK = "0123456789abcdef0123456789abcdef"


def test_the_documented_example_loads():
    config = load_config(EXAMPLE)
    assert [s.name for s in config.schedules] == ["nightly-train", "hourly-eval", "weekly-report"]
    assert [t.name for t in config.triggers] == ["retrain-after-dataset", "deploy-published-model"]
    nightly = config.find("nightly-train")
    assert nightly.when.cron == "0 3 * * *" and nightly.action.single_instance
    assert dict(nightly.action.parameters) == {"Args/epochs": 20, "Args/run_date": "${schedule.planned}"}
    assert nightly.action.add_tag == "nightly-train"
    hourly = config.find("hourly-eval")
    assert hourly.action.queue == "default"  # from scheduler.queue
    assert hourly.catch_up.policy == "skip" and config.find("nightly-train").catch_up.policy == "latest"
    assert config.find("weekly-report").when.timezone == "Europe/Berlin"
    assert config.find("deploy-published-model").kind == "model"
    assert config.state_dir == Path("~/.shipyard/scheduler").expanduser()
    assert load_config(EXAMPLE, state_dir=Path("/tmp/x")).state_dir == Path("/tmp/x")


def test_nested_parameters_and_overrides_flatten(tmp_path):
    path = tmp_path / "s.conf"
    path.write_text(f"""
        scheduler {{ state_dir: state }}
        schedules: [{{ name: a, task_id: "{TASK}", queue: q, minute: 5,
                       parameters {{ Args {{ lr: 0.1 }} }}, overrides {{ script {{ branch: main }} }} }}]
    """)
    config = load_config(path)
    spec = config.schedules[0]
    assert dict(spec.action.parameters) == {"Args/lr": 0.1}
    assert dict(spec.action.overrides) == {"script.branch": "main"}
    assert config.state_dir == tmp_path / "state"


def test_at_without_an_offset_is_in_the_schedule_time_zone():
    tree = {"schedules": [{"name": "once", "function": "m:f", "at": "2024-07-01T09:00:00",
                           "timezone": "Europe/Berlin"}]}
    spec = parse_config(tree).schedules[0]
    assert spec.when.at == clock.parse_iso("2024-07-01T07:00:00+00:00")
    assert spec.when.recurring is False


def _schedule(**fields):
    return {"schedules": [{"name": "s", "task_id": TASK, "queue": "q", "minute": 5, **fields}]}


def _trigger(**fields):
    return {"triggers": [{"name": "t", "task_id": TASK, "queue": "q", "on_status": ["completed"], **fields}]}


ERRORS = [
    (_schedule(minutes=5), "schedule s: unknown key"),
    (_schedule(queue=None), "a queue is needed"),
    (_schedule(function="m:f"), "exactly one of task_id"),
    (_schedule(minute="five"), "minute must be a whole number"),
    (_schedule(cron="0 3 * * *"), "only one of"),
    (_schedule(catch_up="never"), "catch_up must be one of"),
    (_schedule(parameters={"lr": 1}), "Section/name"),
    (_schedule(reuse_task=True, parameters={"Args/lr": 1}), "reuse_task"),
    (_schedule(name="has space"), "name 'has space'"),
    (_schedule(recurring="yes"), "recurring must be true or false"),
    (_schedule(at="tomorrow"), "at must be an ISO-8601 time"),
    (_trigger(type="dataset"), "type must be one of"),
    (_trigger(on_status=["done"]), "unknown status done"),
    (_trigger(on_status=[]), "give on_status, on_tags or metric"),
    (_trigger(metric="loss"), "go together"),
    (_trigger(on_publish=True), "for model triggers"),
    (_trigger(type="model", on_status=[], on_publish=True, exclude_dev=True), "for task triggers"),
    (_trigger(name_match="("), "name_match"),
    ({**_schedule(), "triggers": _trigger(name="s")["triggers"]}, "unique"),
    ({"scheduler": {"poll_interval_s": 0}}, "poll_interval_s must be > 0"),
    ({"scheduler": {"pol_interval_s": 1}}, "scheduler: unknown key"),
    ({"jobs": []}, "config: unknown key"),
]


@pytest.mark.parametrize(("tree", "message"), ERRORS)
def test_mistakes_are_config_errors(tree, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(tree)


def test_an_unreadable_file_is_a_config_error(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("schedules: [ { name: x, parameters { a: ${task.id} } } ]")  # unquoted template
    with pytest.raises(ConfigError, match="cannot read scheduler config"):
        load_config(path)
