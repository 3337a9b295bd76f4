"""The clearml SDK's pipelines (2.1.12) against Shipyard: the pipeline logic runs locally with the
SDK's python, every step is a task enqueued to a queue that a real `shipyard daemon` (two slots)
serves.

* PipelineController with existing tasks as steps: step1 (n -> artifact n*10) and step2 (reads
  step1's artifact through the task id passed as a parameter, adds `add`); run twice, the second
  run reuses the cached step1.
* PipelineDecorator with components as steps: make(n) -> n*10, add_one(x) -> x+1, return values
  passed between steps as artifacts on our files server.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from tests.agent_helpers import agent_env, start_daemon
from tests.compat.conftest import bad_lines, clean_env, pushed_repo
from tests.compat.test_sdk import _result_line, run_sdk
from tests.helpers import start_server

pytestmark = pytest.mark.compat

QUEUE = "pipe-q"

STEP1_PY = textwrap.dedent("""\
    from clearml import Task

    if __name__ == "__main__":
        task = Task.init(project_name="compat-pipe", task_name="step1")
        params = {"n": 1}
        task.connect(params)
        result = int(params["n"]) * 10
        task.upload_artifact("result", artifact_object={"value": result}, wait_on_upload=True)
        print("STEP1", result, flush=True)
        print("TASK_ID", task.id, flush=True)
""")

STEP2_PY = textwrap.dedent("""\
    from clearml import Task

    if __name__ == "__main__":
        task = Task.init(project_name="compat-pipe", task_name="step2")
        params = {"src": "", "add": 1}
        task.connect(params)
        value = Task.get_task(task_id=params["src"]).artifacts["result"].get()["value"] if params["src"] else 0
        final = value + int(params["add"])
        task.upload_artifact("final", artifact_object={"value": final}, wait_on_upload=True)
        task.get_logger().report_scalar("final", "value", final, 0)
        print("STEP2", final, flush=True)
        print("TASK_ID", task.id, flush=True)
""")

CONTROLLER_PY = textwrap.dedent("""\
    import json, sys
    from clearml import PipelineController, Task

    step1_id, step2_id, queue, n = sys.argv[1:5]
    # poll the steps every 3 s (the default is 12 s)
    pipe = PipelineController(name="pipe-tasks", project="compat-pipe", version="1.0.0", pool_frequency=0.05)
    pipe.set_default_execution_queue(queue)
    pipe.add_parameter("n", int(n))
    pipe.add_step(name="step1", base_task_id=step1_id, parameter_override={"General/n": "${pipeline.n}"},
                  cache_executed_step=True)
    pipe.add_step(name="step2", parents=["step1"], base_task_id=step2_id,
                  parameter_override={"General/src": "${step1.id}", "General/add": "1"})
    pipe.start_locally(run_pipeline_steps_locally=False)
    ids = {name: node.executed for name, node in pipe.get_pipeline_dag().items()}
    final = Task.get_task(task_id=ids["step2"]).artifacts["final"].get()
    # the SDK's run listing: the newest run of this pipeline, found by project and name
    found = PipelineController.get(pipeline_project="compat-pipe", pipeline_name="pipe-tasks").id
    print("RESULT " + json.dumps({"ids": ids, "final": final, "controller": pipe.id, "found": found}), flush=True)
""")

DECORATOR_PY = textwrap.dedent("""\
    import json, sys
    from clearml import PipelineDecorator, Task


    @PipelineDecorator.component(return_values=["x"], cache=True, packages=["clearml==2.1.12"])
    def make(n):
        print("MAKE", n)
        return n * 10


    @PipelineDecorator.component(return_values=["y"], packages=["clearml==2.1.12"])
    def add_one(x):
        print("ADD_ONE", x)
        return x + 1


    @PipelineDecorator.pipeline(name="pipe-deco", project="compat-pipe", version="1.0.0",
                                pipeline_execution_queue=None)
    def pipeline(n=3):
        x = make(n)
        y = add_one(x)
        print("FINAL " + json.dumps({"y": int(y), "controller": Task.current_task().id}), flush=True)
        return y


    if __name__ == "__main__":
        PipelineDecorator.set_default_execution_queue(sys.argv[1])
        pipeline(n=int(sys.argv[2]))
        print("DONE", flush=True)
""")


@pytest.fixture(scope="module")
def pipes(sdk_python, tmp_path_factory):
    """A server, the two step tasks recorded by the SDK from a git repo, a two-slot daemon."""
    root = tmp_path_factory.mktemp("pipes")
    server = start_server(root / "server")
    api = server.api()
    work = pushed_repo(root, {"step1.py": STEP1_PY, "step2.py": STEP2_PY})
    env = clean_env(root / "sdk-home", server.env())
    steps = {name: _result_line(run_sdk(sdk_python, work / f"{name}.py", [], cwd=work, env=env, timeout=240),
                                "TASK_ID") for name in ("step1", "step2")}
    daemon = start_daemon(agent_env(server, root / "agent"), [QUEUE], root / "daemon.log", "--services-mode", "2")
    try:
        yield {"server": server, "api": api, "steps": steps, "env": env, "root": root, "daemon": daemon}
    finally:
        daemon.stop()
        server.stop()


def _task(api, task_id: str) -> dict:
    return api.call("tasks.get_by_id", {"task": task_id})["task"]


def test_pipeline_controller_with_existing_tasks(pipes, sdk_python):
    api, root = pipes["api"], pipes["root"]
    script = root / "pipe_tasks.py"
    script.write_text(CONTROLLER_PY)
    args = [pipes["steps"]["step1"], pipes["steps"]["step2"], QUEUE, "3"]
    first = json.loads(_result_line(run_sdk(sdk_python, script, args, cwd=root, env=pipes["env"], timeout=240),
                                    "RESULT"))
    assert first["final"] == {"value": 31}    # 3 * 10 + 1: the parameter went in, the artifact came through
    queue = api.call("queues.get_all", {"name": f"^{QUEUE}$"})["queues"][0]["id"]
    for name in ("step1", "step2"):
        step = _task(api, first["ids"][name])
        assert step["status"] == "completed" and step["execution"]["queue"] == queue, (name, step["status"])
        assert step["id"] != pipes["steps"][name]          # a clone of the base task, run by the agent
        assert step["parent"] == first["controller"]
    step1 = _task(api, first["ids"]["step1"])
    assert step1["hyperparams"]["General"]["n"]["value"] == "3"
    assert _task(api, first["ids"]["step2"])["hyperparams"]["General"]["src"]["value"] == first["ids"]["step1"]
    controller = _task(api, first["controller"])
    assert controller["status"] == "completed" and controller["type"] == "controller"

    second = json.loads(_result_line(run_sdk(sdk_python, script, args, cwd=root, env=pipes["env"], timeout=240),
                                     "RESULT"))
    assert second["final"] == {"value": 31}
    assert second["ids"]["step1"] == first["ids"]["step1"]   # cached: the same step1 task reused
    assert second["ids"]["step2"] != first["ids"]["step2"]
    assert first["found"] == first["controller"] and second["found"] == second["controller"]  # run listing


def test_pipeline_decorator_components_on_shipyard_agents(pipes, sdk_python):
    api, root = pipes["api"], pipes["root"]
    script = root / "pipe_deco.py"
    script.write_text(DECORATOR_PY)
    output = run_sdk(sdk_python, script, [QUEUE, "4"], cwd=root, env=pipes["env"], timeout=240)
    final = json.loads(_result_line(output, "FINAL"))
    assert final["y"] == 41 and "DONE" in output
    steps = api.call("tasks.get_all", {"parent": final["controller"],
                                       "only_fields": ["id", "name", "status", "execution"]})["tasks"]
    queue = api.call("queues.get_all", {"name": f"^{QUEUE}$"})["queues"][0]["id"]
    assert sorted(s["name"] for s in steps) == ["add_one", "make"], steps
    for step in steps:
        assert step["status"] == "completed" and step["execution"]["queue"] == queue, step


def test_no_protocol_errors_in_the_daemon_log(pipes):
    assert not bad_lines(pipes["daemon"].output(), tracebacks=False)
