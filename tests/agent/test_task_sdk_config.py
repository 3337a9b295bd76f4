"""The agent hands its clearml.conf `sdk { ... }` section to its tasks (agent/execution/taskconf.py),
never its API key: a real daemon and server run a task that prints the config file it was given.
The SDK-and-S3 run of the same is tests/compat/test_agent_sdk_settings.py (nightly)."""
from __future__ import annotations

import json
import textwrap

import pytest

from agent.execution.taskconf import default_output_uri
from shipyard.client.config import load_settings
from shipyard.errors import ConfigError
from shipyard.redact import MASK
from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.helpers import ACCESS_KEY, SECRET_KEY, start_server

S3_KEY, S3_SECRET = "AKIASTORAGEKEY01", "storage-secret-0123456789"
OUTPUT = "s3://storage.example.com:9000/team-bucket/runs"

TASK = textwrap.dedent("""\
    import os, shutil, sys
    path = os.environ["CLEARML_CONFIG_FILE"]
    shutil.copy(path, {seen!r})
    print("CONFIG", open(path).read())
    print("MODE", oct(os.stat(path).st_mode & 0o777))
    print("KEY", os.environ["CLEARML_API_ACCESS_KEY"])
""")


def agent_conf(server) -> str:
    return textwrap.dedent(f"""\
        api {{
          api_server: "{server.api_url}"
          files_server: "{server.files_url}"
          web_server: "{server.web_url}"
          credentials {{ access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
        }}
        sdk {{
          aws.s3 {{ key: "{S3_KEY}", secret: "{S3_SECRET}", region: "eu-west-1" }}
          development {{ default_output_uri: "{OUTPUT}", report_use_subprocess: false }}
        }}
    """)


def test_the_task_gets_the_sdk_section_and_no_agent_key(tmp_path):
    server = start_server(tmp_path / "server")
    env = agent_env(server, tmp_path / "agent")
    conf = tmp_path / "agent" / "home" / "clearml.conf"
    conf.write_text(agent_conf(server))
    env["CLEARML_CONFIG_FILE"] = str(conf)
    seen = tmp_path / "seen.conf"
    try:
        api = server.api()
        daemon = start_daemon(env, ["conf-q"], tmp_path / "daemon.log")
        try:
            task = create_task(api, "sdk conf", {"repository": "", "entry_point": "show.py",
                                                 "diff": TASK.format(seen=str(seen))}, queue="conf-q")
            doc = wait_status(api, task, timeout=120)
            console = "\n".join(task_log(api, task))
        finally:
            daemon.stop()
    finally:
        server.stop()
    assert doc["status"] == "completed", (doc.get("status_reason"), console[-3000:])
    given = json.loads(seen.read_text())
    assert given["sdk"]["aws"]["s3"] == {"key": S3_KEY, "secret": S3_SECRET, "region": "eu-west-1"}
    assert given["sdk"]["development"] == {"default_output_uri": OUTPUT, "report_use_subprocess": False}
    assert given["api"] == {"api_server": server.api_url, "web_server": server.web_url,
                            "files_server": server.files_url}
    assert ACCESS_KEY not in seen.read_text() and SECRET_KEY not in seen.read_text()
    assert "MODE 0o600" in console and f"KEY {ACCESS_KEY}" not in console   # its own key, not the agent's
    for secret in (S3_SECRET, S3_KEY, SECRET_KEY):
        assert secret not in console, secret
    assert f'"secret": "{MASK}"' in console
    assert doc["output"]["destination"] == OUTPUT      # what the task's SDK uploads artifacts and models to
    assert f"artifacts and models go to {OUTPUT}" in console


def test_sdk_section_secrets_are_masked_and_a_bad_section_named(tmp_path):
    conf = tmp_path / "clearml.conf"
    conf.write_text('sdk {\n aws.s3.credentials: [{host: "h:9000", key: "KEYID1234", secret: "sEcReT99"}]\n'
                    ' google.storage.credentials_json: "/k.json"\n development.default_output_uri: " s3://b/p "\n}\n')
    settings = load_settings(env={"HOME": str(tmp_path)}, config_file=conf)
    assert {"KEYID1234", "sEcReT99"} <= set(settings.secrets())
    assert default_output_uri(settings.sdk) == "s3://b/p"
    assert default_output_uri({}) == ""
    conf.write_text('sdk: "oops"')
    with pytest.raises(ConfigError, match="'sdk' in config file .* must be a section"):
        load_settings(env={"HOME": str(tmp_path)}, config_file=conf)
