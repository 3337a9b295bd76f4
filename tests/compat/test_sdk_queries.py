"""The query paths users write with the clearml SDK 2.1.12 (issue 19), against a real server:
`Task.get_tasks` with `tags` and a `task_filter` (status, order_by; the SDK itself refuses
`tags` inside `task_filter` next to its own `tags` argument), `Task.query_tasks`,
`Task.get_projects`. (`Model.query_models` and `Dataset.list_datasets`: tests/compat/test_toolbox.py
and test_sdk.py.)"""
from __future__ import annotations

import json
import textwrap

import pytest

from tests.compat.conftest import bad_lines, clean_env
from tests.compat.test_sdk import _result_line, run_sdk

pytestmark = pytest.mark.compat

QUERIES_PY = textwrap.dedent("""\
    import json
    from clearml import Task

    project = "compat-queries"
    made = {}
    for i in range(5):
        task = Task.create(project_name=project, task_name=f"q{i}", task_type="training")
        task.add_tags(["good"] if i % 2 == 0 else ["meh"])
        if i < 3:
            task.mark_started(force=True)
            task.mark_completed(force=True)
        made[f"q{i}"] = task.id
    out = {"made": made}
    good = Task.get_tasks(project_name=project, tags=["good"], task_filter={
        "order_by": ["-name"], "status": ["completed"]})
    out["good_completed_desc"] = [t.name for t in good]
    out["drafts"] = sorted(Task.query_tasks(project_name=project, task_filter={"status": ["created"]}))
    out["not_good"] = sorted(t.name for t in Task.get_tasks(project_name=project, tags=["-good"]))
    out["tag_query"] = sorted(Task.query_tasks(project_name=project, tags=["good"],
                                               task_filter={"status": ["created"]}))
    out["by_name"] = [t.id for t in Task.get_tasks(project_name=project, task_name="q3")]
    out["projects"] = [p.name for p in Task.get_projects()]
    print("RESULT " + json.dumps(out), flush=True)
""")


def test_sdk_task_queries_filter_order_and_list_projects(server, sdk_python, tmp_path):
    script = tmp_path / "queries.py"
    script.write_text(QUERIES_PY)
    env = clean_env(tmp_path / "home", server.env())
    output = run_sdk(sdk_python, script, [], cwd=tmp_path, env=env)
    assert not bad_lines(output), output
    out = json.loads(_result_line(output, "RESULT"))
    made = out["made"]
    assert out["good_completed_desc"] == ["q2", "q0"]
    assert out["drafts"] == sorted([made["q3"], made["q4"]])
    assert out["not_good"] == ["q1", "q3"]
    assert out["tag_query"] == [made["q4"]]
    assert out["by_name"] == [made["q3"]]
    assert "compat-queries" in out["projects"]
