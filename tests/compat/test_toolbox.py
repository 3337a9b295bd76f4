"""The rest of the clearml SDK's toolbox (2.1.12, in its own venv) against a real Shipyard server:
StorageManager against our files server, and the generic APIClient the SDK offers for the
REST services (projects, tasks, queues, workers, events, models)."""
from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from tests.compat.conftest import bad_lines, clean_env
from tests.compat.test_sdk import _result_line, run_sdk

pytestmark = pytest.mark.compat

STORAGE_PY = textwrap.dedent("""\
    import json, os, sys
    from clearml import StorageManager

    files_host = os.environ["CLEARML_FILES_HOST"]
    base = files_host + "/compat-storage/run1"
    src = sys.argv[1]
    out = {}
    out["uploaded"] = StorageManager.upload_file(local_file=src, remote_url=base + "/blob.bin")
    out["exists"] = StorageManager.exists_file(base + "/blob.bin")
    out["missing_exists"] = StorageManager.exists_file(base + "/nothing-here.bin")
    out["size"] = StorageManager.get_file_size_bytes(base + "/blob.bin")
    local = StorageManager.get_local_copy(remote_url=base + "/blob.bin")
    out["local"] = local
    out["local_again"] = StorageManager.get_local_copy(remote_url=base + "/blob.bin")  # cached
    out["fresh"] = StorageManager.get_local_copy(remote_url=base + "/blob.bin", force_download=True)
    dl_dir = os.path.join(os.path.dirname(src), "dl")
    out["downloaded"] = StorageManager.download_file(base + "/blob.bin", local_folder=dl_dir, overwrite=True)
    out["list"] = StorageManager.list(base)
    out["missing"] = StorageManager.get_local_copy(remote_url=base + "/nothing-here.bin")
    print("RESULT " + json.dumps(out), flush=True)
""")


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_storage_manager_roundtrip(server, api, sdk_python, tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(bytes(range(256)) * 4096 + b"tail")  # 1 MiB of every byte value, plus a tail
    script = tmp_path / "storage.py"
    script.write_text(STORAGE_PY)
    env = clean_env(tmp_path / "home", server.env())
    # a missing object is a warning from the SDK (not a traceback, not a protocol error)
    out = json.loads(_result_line(run_sdk(sdk_python, script, [str(src)], cwd=tmp_path, env=env), "RESULT"))
    url = f"{server.files_url}/compat-storage/run1/blob.bin"
    assert out["uploaded"] == url
    assert out["exists"] is True and out["missing_exists"] is False
    assert out["size"] == src.stat().st_size
    for key in ("local", "local_again", "fresh", "downloaded"):
        assert _sha(out[key]) == _sha(src), key
    assert out["local_again"] == out["local"]
    assert out["missing"] is None
    # the SDK's HTTP driver has no listing (upstream ClearML behaves the same): list() is None
    assert out["list"] is None
    # the bytes on the server are the same, and only for authenticated readers
    resp = api.http.get(url, headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
    assert resp.status_code == 200 and hashlib.sha256(resp.content).hexdigest() == _sha(src)


APICLIENT_PY = textwrap.dedent("""\
    import json, sys
    from clearml import Task
    from clearml.backend_api.session.client import APIClient

    t = Task.init(project_name="compat-apiclient", task_name="reported")
    lg = t.get_logger()
    for i in range(3):
        lg.report_scalar("loss", "train", 1.0 / (i + 1), i)
    print("hello from the console", flush=True)
    t.flush(wait_for_uploads=True)
    t.mark_completed()

    c = APIClient()
    out = {"task": t.id}
    projects = c.projects.get_all(name="compat-apiclient")
    out["projects"] = [(p.id, p.name) for p in projects]
    out["tasks"] = [(x.id, x.name, str(x.status)) for x in
                    c.tasks.get_all(project=[projects[0].id], only_fields=["id", "name", "status"])]
    full = c.tasks.get_by_id(task=t.id)
    out["task_status"] = str(full.status)
    out["last_iteration"] = full.last_iteration
    q = c.queues.create(name="compat-apiclient-q")
    out["queue_created"] = q.id
    out["queues"] = [x.name for x in c.queues.get_all(name="compat-apiclient-q")]
    out["default_queue"] = c.queues.get_default().name
    out["workers"] = [w.id for w in c.workers.get_all()]
    c.workers.register(worker="compat-apiclient-worker", queues=[q.id], timeout=60)
    out["workers_after"] = [w.id for w in c.workers.get_all()]
    c.workers.unregister(worker="compat-apiclient-worker")
    hist = c.events.scalar_metrics_iter_histogram(task=t.id)
    out["hist"] = hist.metrics
    log = c.events.get_task_log(task=t.id, batch_size=100)
    out["log"] = [e.get("msg", "") for e in log.events]
    ev = c.events.get_task_events(task=t.id, event_type="training_stats_scalar", batch_size=100)
    out["scalar_events"] = len(ev.events)
    mv = c.events.get_scalar_metrics_and_variants(task=t.id)
    out["metrics"] = mv.metrics
    latest = c.events.get_task_latest_scalar_values(task=t.id)
    out["latest"] = latest.metrics
    m = c.models.create(uri="https://example.com/m.bin", name="compat-apiclient-model",
                        project=projects[0].id, task=t.id, framework="PyTorch")
    out["model_id"] = m.id
    out["models"] = [(x.id, x.name, x.uri) for x in c.models.get_all(name="compat-apiclient-model")]
    out["models_by_project"] = [x.id for x in c.models.get_all(project=[projects[0].id])]
    c.models.update(model=m.id, comment="from apiclient")
    out["model_comment"] = c.models.get_by_id(model=m.id).comment
    c.queues.delete(queue=q.id)
    out["queues_after_delete"] = [x.name for x in c.queues.get_all(name="compat-apiclient-q")]
    print("RESULT " + json.dumps(out, default=str), flush=True)
""")


def test_api_client_generic_calls(server, api, sdk_python, tmp_path):
    script = tmp_path / "apiclient.py"
    script.write_text(APICLIENT_PY)
    env = clean_env(tmp_path / "home", server.env())
    output = run_sdk(sdk_python, script, [], cwd=tmp_path, env=env)
    assert not bad_lines(output)
    out = json.loads(_result_line(output, "RESULT"))
    task = out["task"]
    assert [name for _, name in out["projects"]] == ["compat-apiclient"]
    assert (task, "reported", "completed") in [tuple(x) for x in out["tasks"]]
    assert out["task_status"] == "completed" and out["last_iteration"] == 2
    assert out["queues"] == ["compat-apiclient-q"]
    assert out["default_queue"] == "default"
    assert "compat-apiclient-worker" in out["workers_after"]
    assert "compat-apiclient-worker" not in out["workers"]
    assert out["hist"]["loss"]["train"]["y"] == pytest.approx([1.0, 0.5, 1 / 3])
    assert any("hello from the console" in line for line in out["log"])
    assert out["scalar_events"] == 3
    assert "train" in out["metrics"]["loss"]
    assert "loss" in json.dumps(out["latest"])
    assert [tuple(x) for x in out["models"]] == [(out["model_id"], "compat-apiclient-model",
                                                 "https://example.com/m.bin")]
    assert out["model_id"] in out["models_by_project"]
    assert out["model_comment"] == "from apiclient"
    assert out["queues_after_delete"] == []
    # what the APIClient wrote is what the server holds
    model = api.call("models.get_by_id", {"model": out["model_id"]})["model"]
    assert model["task"] == task and model["framework"] == "PyTorch"
    assert "compat-apiclient-worker" not in [w["id"] for w in api.call("workers.get_all", {}).get("workers") or []]


MODELS_PY = textwrap.dedent("""\
    import hashlib, json
    from clearml import InputModel, Model, OutputModel, Task

    producer = Task.init(project_name="compat-models", task_name="producer", output_uri=True)
    weights = bytes(range(256)) * 512
    open("w.bin", "wb").write(weights)
    om = OutputModel(task=producer, name="compat-model", framework="PyTorch", tags=["candidate"])
    om.update_weights("w.bin")
    producer.close()
    out = {"producer": producer.id, "model": om.id, "sha": hashlib.sha256(weights).hexdigest()}
    out["queried"] = [m.id for m in Model.query_models(project_name="compat-models", model_name="compat-model",
                                                       tags=["candidate"])]
    out["queried_other_tag"] = [m.id for m in Model.query_models(project_name="compat-models", tags=["nope"])]

    consumer = Task.init(project_name="compat-models", task_name="consumer")
    im = InputModel(model_id=om.id)
    im.connect(consumer)
    out["input_name"], out["input_tags"], out["input_framework"] = im.name, im.tags, im.framework
    out["input_sha"] = hashlib.sha256(open(im.get_local_copy(), "rb").read()).hexdigest()
    m = Model(model_id=om.id)
    m.publish()
    out["published"] = Model(model_id=om.id).published
    out["consumer"] = consumer.id
    consumer.close()
    out["consumer_inputs"] = [x.id for x in Task.get_task(task_id=consumer.id).models["input"]]
    print("RESULT " + json.dumps(out), flush=True)
""")


def test_model_registry_with_the_sdk(server, api, sdk_python, tmp_path):
    script = tmp_path / "models.py"
    script.write_text(MODELS_PY)
    env = clean_env(tmp_path / "home", server.env())
    out = json.loads(_result_line(run_sdk(sdk_python, script, [], cwd=tmp_path, env=env), "RESULT"))
    assert out["queried"] == [out["model"]] and out["queried_other_tag"] == []
    assert (out["input_name"], out["input_tags"], out["input_framework"]) == ("compat-model", ["candidate"],
                                                                             "PyTorch")
    assert out["input_sha"] == out["sha"]                    # the weights came back byte for byte
    assert out["published"] is True
    assert out["consumer_inputs"] == [out["model"]]
    model = api.call("models.get_by_id", {"model": out["model"]})["model"]
    assert model["task"] == out["producer"] and model["ready"] is True and model["tags"] == ["candidate"]
    assert model["uri"].startswith(server.files_url + "/")
    consumer = api.call("tasks.get_by_id", {"task": out["consumer"]})["task"]
    assert [m["model"] for m in consumer["models"]["input"]] == [out["model"]]
