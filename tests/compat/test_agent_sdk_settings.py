"""The agent hands its clearml.conf `sdk { ... }` section to the tasks it runs, as clearml-agent
does, and not its API key: a daemon configured with S3 credentials for a moto server and
`sdk.development.default_output_uri: s3://...` runs a task whose real clearml SDK uploads an
artifact; the object lands in the bucket, the task's config file holds no agent key, and the
console it ships shows none of the secrets (the task prints its whole config file)."""
from __future__ import annotations

import json
import textwrap

import pytest

from shipyard.redact import MASK
from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.compat.conftest import pushed_repo
from tests.helpers import ACCESS_KEY, SECRET_KEY, start_server
from tests.s3_helpers import MOTO_KEY, MOTO_SECRET, keys, make_bucket, start_moto

pytestmark = [pytest.mark.compat, pytest.mark.nightly]  # about a minute: a venv with clearml and boto3

TASK_PY = textwrap.dedent("""\
    import os
    import shutil
    import sys

    from clearml import Task

    task = Task.init()
    shutil.copy(os.environ["CLEARML_CONFIG_FILE"], sys.argv[1] if len(sys.argv) > 1 else "{seen}")
    print("TASK CONFIG", open(os.environ["CLEARML_CONFIG_FILE"]).read(), flush=True)
    print("TASK ENV KEY", os.environ["CLEARML_API_ACCESS_KEY"], flush=True)
    task.upload_artifact("result", {{"ok": 1}}, wait_on_upload=True)
    print("ARTIFACT AT", task.artifacts["result"].url, flush=True)
""")


def agent_config(server, host: str, bucket: str) -> str:
    """An agent's clearml.conf: its key in `api`, and what its tasks' SDK should use in `sdk`."""
    return textwrap.dedent(f"""\
        api {{
          api_server: "{server.api_url}"
          files_server: "{server.files_url}"
          web_server: "{server.web_url}"
          credentials {{ access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
        }}
        sdk {{
          aws {{
            s3 {{
              region: "us-east-1"
              credentials: [
                {{ host: "{host}", key: "{MOTO_KEY}", secret: "{MOTO_SECRET}", secure: false, multipart: false }}
              ]
            }}
          }}
          development {{
            default_output_uri: "s3://{host}/{bucket}/out"
            report_use_subprocess: false
          }}
        }}
    """)


@pytest.fixture()
def moto(tmp_path):
    server = start_moto(tmp_path)
    yield server
    server.stop()


def test_tasks_get_the_agents_sdk_settings_without_its_key(moto, tmp_path):
    bucket = make_bucket(moto.url)
    host = f"127.0.0.1:{moto.port}"
    server = start_server(tmp_path / "server")
    seen = tmp_path / "seen.conf"
    work = pushed_repo(tmp_path / "repo", {"task.py": TASK_PY.format(seen=seen)})
    env = agent_env(server, tmp_path / "agent")
    conf = tmp_path / "agent" / "home" / "clearml.conf"
    conf.write_text(agent_config(server, host, bucket))
    env["CLEARML_CONFIG_FILE"] = str(conf)
    try:
        api = server.api()
        daemon = start_daemon(env, ["s3-q"], tmp_path / "daemon.log")
        try:
            task = create_task(api, "sdk settings", {
                "repository": f"file://{work.parent / 'origin.git'}", "branch": "main", "entry_point": "task.py",
                "working_dir": ".", "requirements": {"pip": "clearml==2.1.12\nboto3\n"}}, queue="s3-q")
            doc = wait_status(api, task, timeout=400)
            log = task_log(api, task)
        finally:
            daemon.stop()
    finally:
        server.stop()
    console = "\n".join(log)
    (tmp_path / "console.txt").write_text(console)  # kept with the test's tmp dir, for post-mortems
    assert doc["status"] == "completed", (doc["status_reason"], console[-4000:])
    stored = keys(moto.url, bucket)
    assert any(k.startswith("out/") and k.endswith("/artifacts/result/result.json") for k in stored), sorted(stored)
    assert f"ARTIFACT AT s3://{host}/{bucket}/out/" in console
    given = json.loads(seen.read_text())
    assert given["sdk"]["development"]["default_output_uri"] == f"s3://{host}/{bucket}/out"
    assert given["sdk"]["aws"]["s3"]["credentials"][0]["secret"] == MOTO_SECRET
    assert "credentials" not in given["api"] and ACCESS_KEY not in seen.read_text()
    assert SECRET_KEY not in seen.read_text()
    assert f"TASK ENV KEY {ACCESS_KEY}" not in console                # the task ran with a key of its own
    assert "TASK CONFIG" in console and MASK in console
    for secret in (MOTO_SECRET, MOTO_KEY, SECRET_KEY):
        assert secret not in console, secret
