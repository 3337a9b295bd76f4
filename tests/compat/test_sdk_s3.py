"""The real clearml SDK against a server whose files listener keeps files in S3 (a moto server):
the artifacts it uploads land in the bucket and read back through the files listener."""
from __future__ import annotations

import json
import textwrap
from urllib.parse import unquote

import pytest
import requests

from tests.compat.conftest import clean_env
from tests.compat.test_sdk import _result_line, run_sdk
from tests.helpers import start_server
from tests.s3_helpers import keys, make_bucket, server_env, start_moto

pytestmark = pytest.mark.compat

SCRIPT = textwrap.dedent("""\
    import sys
    from clearml import Task

    task = Task.init(project_name="compat-s3", task_name="artifact to s3")
    task.upload_artifact("stats", {"a": 1, "b": [1, 2]}, wait_on_upload=True)
    with open("weights.bin", "wb") as out:
        out.write(bytes(range(256)) * 4096)
    task.upload_artifact("weights", "weights.bin", wait_on_upload=True)
    print("TASK_ID", task.id, flush=True)
    task.close()
""")


def test_sdk_artifacts_are_stored_in_s3_and_served_back(sdk_python, tmp_path):
    moto = start_moto(tmp_path)
    bucket = make_bucket(moto.url)
    server = start_server(tmp_path / "srv", env=server_env(moto.url, bucket, prefix="team/files"))
    try:
        script = tmp_path / "script.py"
        script.write_text(SCRIPT)
        output = run_sdk(sdk_python, script, [], cwd=tmp_path, env=clean_env(tmp_path / "home", server.env()))
        api = server.api()
        task = api.call("tasks.get_by_id", {"task": _result_line(output, "TASK_ID")})["task"]
        uris = {a["key"]: a["uri"] for a in task["execution"]["artifacts"]}
        auth = {"Authorization": f"Bearer {api.token}"}
        stats = requests.get(uris["stats"], headers=auth, timeout=10)
        assert stats.status_code == 200 and json.loads(stats.content) == {"a": 1, "b": [1, 2]}
        weights = requests.get(uris["weights"], headers={**auth, "Range": "bytes=256-511"}, timeout=10)
        assert weights.status_code == 206 and weights.content == bytes(range(256))
        stored = keys(moto.url, bucket)
        assert all(k.startswith("team/files/compat-s3/") for k in stored), sorted(stored)
        object_path = unquote(uris["weights"][len(server.files_url) + 1:])
        assert stored[f"team/files/{object_path}"] == bytes(range(256)) * 4096
        assert not list((server.data_dir / "files").rglob("*.*"))   # nothing on the server's disk
    finally:
        server.stop()
        moto.stop()
