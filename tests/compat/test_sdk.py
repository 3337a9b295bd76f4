"""The real clearml SDK (2.1.12, in its own venv) against a real Shipyard server.

Each scenario runs a script with the SDK in a subprocess, then reads the results back over the
API as any ClearML client would. The SDK's output must be free of the lines that betray a
protocol problem ("Action failed", "Failed parsing response", tracebacks).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.compat.conftest import bad_lines, clean_env, make_repo
from tests.helpers import ApiFailure

pytestmark = pytest.mark.compat

TRAIN_PY = textwrap.dedent("""\
    import argparse
    import sys

    from clearml import Task

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=3)

    if __name__ == "__main__":
        task = Task.init(project_name=sys.argv.pop(1), task_name="train")
        args = parser.parse_args()
        cfg = task.connect({"batch": 32, "opt": "adam"})
        logger = task.get_logger()
        for i in range(args.epochs):
            logger.report_scalar("loss", "train", 1.0 / (i + 1), i)
            logger.report_scalar("loss", "val", 2.0 / (i + 1), i)
        logger.report_text("hello text")
        print("console line 1", cfg["batch"], args.lr)
        task.upload_artifact("stats", artifact_object={"a": 1, "b": [1, 2]})
        print("TASK_ID", task.id)
        task.close()
        print("CLOSED OK")
""")

OPS_PY = textwrap.dedent("""\
    import json
    import sys

    from clearml import Task

    project, source_id = sys.argv[1], sys.argv[2]
    out = {}
    t = Task.get_task(task_id=source_id)
    out["get_task"] = [t.id, t.name, str(t.status)]
    by_name = Task.get_task(project_name=project, task_name="train")
    out["get_task_by_name"] = by_name.id

    clone = Task.clone(source_task=t, name="cloned")
    clone.set_parameters({"Args/lr": 0.9, "General/batch": 64})
    out["clone"] = clone.id
    out["clone_params"] = clone.get_parameters()
    Task.enqueue(clone, queue_name="default")
    out["clone_status"] = str(Task.get_task(task_id=clone.id).status)

    to_stop = Task.clone(source_task=t, name="to-stop")
    to_stop.mark_started(force=True)
    to_stop.mark_stopped(force=False)
    out["to_stop"] = to_stop.id
    out["stopped_status"] = str(Task.get_task(task_id=to_stop.id).status)
    to_stop.reset(force=True)
    out["reset_status"] = str(Task.get_task(task_id=to_stop.id).status)

    to_dequeue = Task.clone(source_task=t, name="to-dequeue")
    Task.enqueue(to_dequeue, queue_name="default")
    Task.dequeue(to_dequeue)
    out["to_dequeue"] = to_dequeue.id
    print("RESULT " + json.dumps(out), flush=True)
""")


def _stacks(pid: int) -> str:
    """Every thread's Python stack of a hung script (py-spy, where installed), for the failure."""
    if not shutil.which("py-spy"):
        return ""
    dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True, check=False)
    return "\n--- py-spy dump ---\n" + dump.stdout + dump.stderr


def run_sdk(sdk_python: Path, script: Path, args: list[str], *, cwd: Path, env: dict,
            timeout: float = 180, expect_rc: int = 0, allow_traceback: bool = False) -> str:
    proc = subprocess.Popen([str(sdk_python), str(script), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stacks = _stacks(proc.pid)  # where it hangs, before the kill
        proc.kill()
        partial, _ = proc.communicate()
        script.with_suffix(".out").write_text(partial + stacks)
        pytest.fail(f"SDK script did not finish in {timeout}s:\n{partial}{stacks}", pytrace=False)
    script.with_suffix(".out").write_text(output)  # kept with the test's tmp dir, for post-mortems
    assert proc.returncode == expect_rc, f"SDK script exited {proc.returncode}:\n{output}"
    bad = bad_lines(output, tracebacks=not allow_traceback)
    assert not bad, "SDK reported protocol problems:\n" + "\n".join(bad) + f"\n--- full output ---\n{output}"
    return output


def _result_line(output: str, prefix: str) -> str:
    for line in output.splitlines():
        if line.startswith(prefix + " "):
            return line[len(prefix) + 1:].strip()
    raise AssertionError(f"no '{prefix}' line in output:\n{output}")


@pytest.fixture(scope="module")
def trained(server, sdk_python, tmp_path_factory):
    """Run train.py once with the SDK in a git repo with an uncommitted change."""
    root = tmp_path_factory.mktemp("sdk")
    repo = root / "repo"
    sha = make_repo(repo, {"train.py": TRAIN_PY}, origin="https://example.com/demo.git",
                    uncommitted={"train.py": TRAIN_PY + "# local change\n"})
    project = f"compat-{uuid.uuid4().hex[:8]}"
    env = clean_env(root / "home", server.env())
    output = run_sdk(sdk_python, repo / "train.py", [project, "--lr", "0.5"], cwd=repo, env=env)
    task_id = _result_line(output, "TASK_ID")
    return {"task_id": task_id, "sha": sha, "project": project, "output": output, "env": env,
            "root": root}


def test_task_init_records_the_run(trained, api):
    assert "CLOSED OK" in trained["output"]
    task = api.call("tasks.get_by_id", {"task": trained["task_id"]})["task"]
    assert task["status"] == "completed", task
    assert task["name"] == "train"
    assert task["type"] == "training"
    project = api.call("projects.get_by_id", {"project": task["project"]})["project"]
    assert project["name"] == trained["project"]
    assert task["started"] and task["completed"]
    assert task["runtime"].get("progress") == "100"


def test_git_info_and_diff(trained, api):
    script = api.call("tasks.get_by_id", {"task": trained["task_id"]})["task"]["script"]
    assert script["repository"] == "https://example.com/demo.git"
    assert script["branch"] == "main"
    assert script["version_num"] == trained["sha"]
    assert script["entry_point"] == "train.py"
    assert script["working_dir"] == "."
    assert "+# local change" in script["diff"]
    assert "clearml" in str(script.get("requirements", {}).get("pip", ""))


def test_hyperparams(trained, api):
    params = api.call("tasks.get_by_id", {"task": trained["task_id"]})["task"]["hyperparams"]
    assert params["Args"]["lr"]["value"] == "0.5"
    assert params["Args"]["epochs"]["value"] == "3"
    assert params["General"]["batch"] == {"section": "General", "name": "batch", "value": "32",
                                          "type": "int", "description": ""} or \
        params["General"]["batch"]["value"] == "32"
    assert params["General"]["opt"]["value"] == "adam"
    flat = api.call("tasks.get_hyper_params", {"tasks": [trained["task_id"]]})["params"][0]["hyperparams"]
    assert {("Args", "lr", "0.5"), ("General", "opt", "adam")} <= {(p["section"], p["name"], p["value"])
                                                                    for p in flat}


def test_scalars(trained, api):
    hist = api.call("events.scalar_metrics_iter_histogram", {"task": trained["task_id"], "key": "iter"})
    assert hist["loss"]["train"]["x"] == [0, 1, 2]
    assert hist["loss"]["train"]["y"] == pytest.approx([1.0, 0.5, 1 / 3])
    assert hist["loss"]["val"]["y"] == pytest.approx([2.0, 1.0, 2 / 3])
    task = api.call("tasks.get_by_id", {"task": trained["task_id"]})["task"]
    assert task["last_iteration"] == 2
    last = {(m["metric"], m["variant"]): m for v in task["last_metrics"].values() for m in v.values()}
    assert last[("loss", "train")]["value"] == pytest.approx(1 / 3)


def test_console_log(trained, api):
    log = api.call("events.get_task_log", {"task": trained["task_id"], "batch_size": 500,
                                           "navigate_earlier": False, "order": "asc"})
    text = "\n".join(e.get("msg", "") for e in log["events"])
    assert "console line 1 32 0.5" in text
    assert "hello text" in text
    assert log["total"] >= 1 and log["returned"] == len(log["events"])


def test_artifact_uploaded_and_downloadable(trained, api):
    task = api.call("tasks.get_by_id", {"task": trained["task_id"]})["task"]
    artifacts = {a["key"]: a for a in task["execution"]["artifacts"]}
    stats = artifacts["stats"]
    assert stats["type"] == "dict"
    assert stats["uri"].startswith(trained["env"]["CLEARML_FILES_HOST"] + "/")
    resp = api.http.get(stats["uri"], headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert json.loads(resp.content) == {"a": 1, "b": [1, 2]}
    assert api.http.get(stats["uri"], timeout=10).status_code == 401


def test_sdk_reads_back_like_a_client(trained, sdk_python):
    script = trained["root"] / "readback.py"
    script.write_text(textwrap.dedent("""\
        import json, sys
        from clearml import Task
        t = Task.get_task(task_id=sys.argv[1])
        out = {"status": str(t.status), "scalars": t.get_reported_scalars(),
               "console": t.get_reported_console_output(50),
               "artifact": t.artifacts["stats"].get(), "params": t.get_parameters()}
        print("RESULT " + json.dumps(out, default=str), flush=True)
    """))
    output = run_sdk(sdk_python, script, [trained["task_id"]], cwd=trained["root"], env=trained["env"])
    out = json.loads(_result_line(output, "RESULT"))
    assert out["status"] == "completed"
    assert out["scalars"]["loss"]["train"]["y"] == pytest.approx([1.0, 0.5, 1 / 3])
    assert any("console line 1" in line for line in out["console"])
    assert out["artifact"] == {"a": 1, "b": [1, 2]}
    assert out["params"]["Args/lr"] == "0.5"


def test_sdk_task_operations(trained, server, api, sdk_python):
    script = trained["root"] / "ops.py"
    script.write_text(OPS_PY)
    output = run_sdk(sdk_python, script, [trained["project"], trained["task_id"]], cwd=trained["root"],
                     env=trained["env"])
    out = json.loads(_result_line(output, "RESULT"))
    assert out["get_task"] == [trained["task_id"], "train", "completed"]
    assert out["get_task_by_name"] == trained["task_id"]

    clone = api.call("tasks.get_by_id", {"task": out["clone"]})["task"]
    assert clone["status"] == "queued"
    assert clone["parent"] == trained["task_id"]
    assert clone["name"] == "cloned"
    assert clone["hyperparams"]["Args"]["lr"]["value"] == "0.9"
    assert clone["hyperparams"]["General"]["batch"]["value"] == "64"
    assert clone["script"]["version_num"] == trained["sha"]
    assert "development" not in clone["system_tags"]
    assert out["clone_params"]["Args/lr"] == "0.9"
    assert out["clone_status"] == "queued"
    default = api.call("queues.get_all", {"name": "^default$"})["queues"][0]
    assert clone["execution"]["queue"] == default["id"]
    assert out["clone"] in [e["task"] for e in default["entries"]]

    assert out["stopped_status"] == "stopped"
    assert out["reset_status"] == "created"
    reset = api.call("tasks.get_by_id", {"task": out["to_stop"]})["task"]
    assert reset["status"] == "created" and not reset.get("started")

    dequeued = api.call("tasks.get_by_id", {"task": out["to_dequeue"]})["task"]
    assert dequeued["status"] == "created"
    assert out["to_dequeue"] not in [e["task"] for e in
                                     api.call("queues.get_by_id", {"queue": default["id"]})["queue"]["entries"]]
    # leave the shared default queue as we found it
    api.call("tasks.dequeue", {"task": out["clone"]})


@pytest.fixture()
def sdk_run(server, sdk_python, tmp_path):
    """Run a script (text) with the SDK in a fresh HOME and work dir; returns its output."""
    env = clean_env(tmp_path / "home", server.env())

    def run(text: str, *args: str, name: str = "script.py", **kw) -> str:
        script = tmp_path / name
        script.write_text(textwrap.dedent(text))
        return run_sdk(sdk_python, script, list(args), cwd=tmp_path, env=env, **kw)

    run.env = env
    return run


def test_rich_reporting_models_and_delete(sdk_run, api):
    out = sdk_run("""\
        import json
        import numpy as np
        from clearml import OutputModel, Task

        t = Task.init(project_name="compat-rich", task_name="rich", output_uri=True)
        t.connect_configuration({"model": {"layers": 3}}, name="my_cfg")
        t.set_user_properties(owner="me")
        lg = t.get_logger()
        lg.report_single_value("acc", 0.9)
        lg.report_histogram("hist", "v", values=[1, 2, 3], iteration=0)
        lg.report_table("tbl", "v", iteration=0, table_plot=[["a", "b"], [1, 2]])
        lg.report_image("img", "sample", iteration=0, image=(np.random.rand(8, 8, 3) * 255).astype("uint8"))
        t.add_tags(["x"])
        with open("w.bin", "wb") as f:
            f.write(b"weights" * 10)
        OutputModel(task=t, framework="PyTorch").update_weights("w.bin")
        t.close()

        r = Task.get_task(task_id=t.id)
        model = r.models["output"][-1]
        out = {"id": t.id, "cfg": r.get_configuration_object("my_cfg"), "props": r.get_user_properties(True),
               "single": r.get_reported_single_values(), "plots": len(r.get_reported_plots()),
               "tags": r.get_tags(), "model_url": model.url, "model_bytes": open(model.get_local_copy(), "rb").read(7).decode(),
               "found": [x.id for x in Task.get_tasks(project_name="compat-rich", task_name="rich", tags=["x"])]}
        r.publish()
        out["published"] = [str(Task.get_task(task_id=t.id).status),
                            Task.get_task(task_id=t.id).models["output"][-1].published]
        print("RESULT " + json.dumps(out), flush=True)
        gone = Task.create(project_name="compat-rich", task_name="to-delete")
        print("DELETED", gone.id, bool(gone.delete()), flush=True)
    """)
    res = json.loads(_result_line(out, "RESULT"))
    assert "layers = 3" in res["cfg"]
    assert res["props"] == {"owner": "me"}
    assert res["single"] == {"acc": 0.9}
    assert res["plots"] == 2
    assert res["tags"] == ["x"] and res["found"] == [res["id"]]
    assert res["model_url"].startswith(sdk_run.env["CLEARML_FILES_HOST"]) and res["model_bytes"] == "weights"
    assert res["published"] == ["published", True]
    deleted_id, ok = _result_line(out, "DELETED").split()
    assert ok == "True"
    with pytest.raises(ApiFailure):
        api.call("tasks.get_by_id", {"task": deleted_id})
    images = api.call("events.debug_images", {"metrics": [{"task": res["id"]}]})
    assert "img" in json.dumps(images)


def test_dataset_versions_roundtrip(sdk_run):
    # also with the documented GET-body workaround: every call as POST
    sdk_run.env["CLEARML_API_DEFAULT_REQ_METHOD"] = "POST"
    out = sdk_run("""\
        import json, os
        from clearml import Dataset

        os.makedirs("data", exist_ok=True)
        for i in range(3):
            open(f"data/f{i}.txt", "w").write(f"file {i}")
        ds = Dataset.create(dataset_name="ds", dataset_project="compat-data")
        ds.add_files("data")
        ds.upload()
        ds.finalize()
        got = Dataset.get(dataset_project="compat-data", dataset_name="ds")
        local = got.get_local_copy()
        child = Dataset.create(dataset_name="ds", dataset_project="compat-data", parent_datasets=[ds.id])
        open("data/f3.txt", "w").write("file 3")
        child.add_files("data")
        child.upload()
        child.finalize()
        out = {"same": got.id == ds.id, "files": sorted(got.list_files()), "f1": open(os.path.join(local, "f1.txt")).read(),
               "latest": Dataset.get(dataset_project="compat-data", dataset_name="ds").id == child.id,
               "child_files": sorted(Dataset.get(dataset_id=child.id).list_files()),
               "versions": sorted(d["version"] for d in Dataset.list_datasets(dataset_project="compat-data"))}
        print("RESULT " + json.dumps(out), flush=True)
    """)
    res = json.loads(_result_line(out, "RESULT"))
    assert res == {"same": True, "files": ["f0.txt", "f1.txt", "f2.txt"], "f1": "file 1", "latest": True,
                   "child_files": ["f0.txt", "f1.txt", "f2.txt", "f3.txt"], "versions": ["1.0.0", "1.0.1"]}
    assert "No projects were found" not in out


def test_task_reuse_and_failure(sdk_run, api):
    reuse = """\
        from clearml import Task
        t = Task.init(project_name="compat-reuse", task_name="again")
        print("TASK_ID", t.id, flush=True)
    """
    first = _result_line(sdk_run(reuse, name="reuse.py"), "TASK_ID")
    second = _result_line(sdk_run(reuse, name="reuse.py"), "TASK_ID")
    assert first == second  # nothing was stored, so the SDK resets and reuses the previous task
    task = api.call("tasks.get_by_id", {"task": first})["task"]
    assert task["status"] == "completed"

    # A script that raises right after Task.init can hang for good at exit in SDK 2.1.12, with any
    # server: the exit path kills the repository-detection thread with an async exception (it is
    # still running on a loaded host), which can leave the task's edit lock held; the resource
    # monitor's first report then waits on that lock and the exit joins the monitor. Without the
    # monitor nothing at exit takes the lock (py-spy dump of a hung run, 1 in 3 under load).
    out = sdk_run("""\
        from clearml import Task
        t = Task.init(project_name="compat-reuse", task_name="boom", auto_resource_monitoring=False)
        print("TASK_ID", t.id, flush=True)
        raise RuntimeError("deliberate failure")
    """, name="boom.py", expect_rc=1, allow_traceback=True)
    failed = api.call("tasks.get_by_id", {"task": _result_line(out, "TASK_ID")})["task"]
    assert failed["status"] == "failed"
    log = api.call("events.get_task_log", {"task": failed["id"], "batch_size": 100})["events"]
    assert "deliberate failure" in "\n".join(e.get("msg", "") for e in log)


def test_abort_stops_a_running_script(server, api, sdk_python, tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent("""\
        import time
        from clearml import Task
        t = Task.init(project_name="compat-abort", task_name="loop")
        print("TASK_ID", t.id, flush=True)
        for i in range(240):
            time.sleep(0.5)
        print("NOT ABORTED", flush=True)
    """))
    out_path = tmp_path / "loop.out"
    with open(out_path, "w") as out:
        proc = subprocess.Popen([str(sdk_python), str(script)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                env=clean_env(tmp_path / "home", server.env()))
    try:
        task_id = None
        deadline = time.monotonic() + 60
        while task_id is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            task_id = next((line.split()[1] for line in out_path.read_text().splitlines()
                            if line.startswith("TASK_ID ")), None)
        assert task_id, out_path.read_text()
        # a development task is stopped at once; the SDK sees it on its next status poll
        assert api.call("tasks.stop", {"task": task_id})["fields"]["status"] == "stopped"
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = out_path.read_text()
    assert "NOT ABORTED" not in output
    assert "USER ABORTED" in output, output
    assert api.call("tasks.get_by_id", {"task": task_id})["task"]["status"] == "stopped"


def test_execute_remotely_enqueues_and_exits(sdk_run, api):
    out = sdk_run("""\
        from clearml import Task
        t = Task.init(project_name="compat-remote", task_name="later")
        print("TASK_ID", t.id, flush=True)
        t.execute_remotely(queue_name="default", exit_process=True)
        print("STILL RUNNING LOCALLY", flush=True)
    """)
    assert "STILL RUNNING LOCALLY" not in out
    task = api.call("tasks.get_by_id", {"task": _result_line(out, "TASK_ID")})["task"]
    assert task["status"] == "queued" and "development" not in task["system_tags"]
    queue = api.call("queues.get_by_id", {"queue": task["execution"]["queue"]})["queue"]
    assert queue["name"] == "default" and task["id"] in [e["task"] for e in queue["entries"]]
    api.call("tasks.dequeue", {"task": task["id"]})  # leave the shared default queue empty
