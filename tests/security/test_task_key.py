"""Attack 3 of issue 17: a task used the agent's (admin) key and minted admin keys.

Now every run gets a short-lived `task` key of its own, minted by the agent when it claims the
task, kept alive while the run lives and revoked when it ends. The end-to-end test runs a real
server and a real `shipyard daemon` holding an `agent` key (made with `shipyard keys create
--role agent`); the task itself performs the attack (auth.create_credentials with its key) and
the ordinary things a task does (log and scalar events, tasks.get_all, clone + enqueue).
"""
from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import time

import pytest

from agent.execution.taskkey import TaskKeys
from server.auth.keys import KeyStore
from server.storage.store import Store, sqlite_url
from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status
from tests.helpers import Api, ApiFailure, start_server

QUEUE = "keys-e2e"
TTL_S = 3   # the daemon's task-key lifetime: the attack task outlives it, so extension is proven

# The task: everything it learns goes to KEY_TEST_OUT (its console masks its own secret).
TASK_SCRIPT = r'''
import base64, json, os, time, urllib.error, urllib.request

HOST = os.environ["CLEARML_API_HOST"]
ACCESS, SECRET = os.environ["CLEARML_API_ACCESS_KEY"], os.environ["CLEARML_API_SECRET_KEY"]
TASK = os.environ["CLEARML_TASK_ID"]


def call(endpoint, body=None, token=None, lines=None):
    if lines is not None:
        data, ctype = "\n".join(json.dumps(x) for x in lines).encode(), "application/json-lines"
    else:
        data, ctype = json.dumps(body or {}).encode(), "application/json"
    auth = f"Bearer {token}" if token else "Basic " + base64.b64encode(f"{ACCESS}:{SECRET}".encode()).decode()
    request = urllib.request.Request(f"{HOST}/{endpoint}", data=data, method="POST",
                                     headers={"Content-Type": ctype, "Authorization": auth})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            envelope = json.load(response)
    except urllib.error.HTTPError as exc:
        envelope = json.load(exc)
    return envelope["meta"]["result_code"], envelope.get("data") or {}


time.sleep(float(os.environ.get("KEY_TEST_SLEEP", "0")))   # outlive the key's first expiry
code, data = call("auth.login")
token = data.get("token")
now = int(time.time() * 1000)
results = {"login": code}
for role in ("admin", "agent", "user", "task", None):
    body = {"label": "stolen"} if role is None else {"label": "stolen", "role": role}
    results[f"mint_{role}"] = call("auth.create_credentials", body, token)[0]
results["extend_self"] = call("auth.extend_credentials", {"access_key": ACCESS, "expires_in_s": 3600}, token)[0]
results["whoami"] = call("users.get_current_user", {}, token)[1].get("user", {}).get("role")
results["events"] = call("events.add_batch", token=token, lines=[
    {"task": TASK, "type": "log", "msg": "reported with the task key", "level": "info", "timestamp": now},
    {"task": TASK, "type": "training_stats_scalar", "metric": "loss", "variant": "train", "value": 0.25,
     "iter": 1, "timestamp": now}])[0]
results["get_all"] = len(call("tasks.get_all", {"id": [TASK]}, token)[1].get("tasks") or [])
code, data = call("tasks.clone", {"task": TASK, "new_task_name": "pipeline step"}, token)
results["clone"], clone = code, data.get("id")
results["enqueue"] = call("tasks.enqueue", {"task": clone, "queue": os.environ["KEY_TEST_QUEUE"]}, token)[0]
with open(os.environ["KEY_TEST_OUT"], "w") as out:
    json.dump({"access": ACCESS, "secret": SECRET, "token": token, "clone": clone, "results": results}, out)
print("task key", ACCESS, "secret", SECRET)
'''


def _keys_cli(data_dir, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "shipyard", "keys", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout


def _pair(cli_output: str) -> tuple[str, str]:
    values = dict(line.split("=", 1) for line in cli_output.split())
    return values["CLEARML_API_ACCESS_KEY"], values["CLEARML_API_SECRET_KEY"]


def _env_section(**values: str) -> dict:
    return {"Environment": {name: {"section": "Environment", "name": name, "value": value}
                            for name, value in values.items()}}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("task-key")
    server = start_server(root / "server")
    agent_key = _pair(_keys_cli(server.data_dir, "create", "--role", "agent", "--name", "test agent"))
    env = agent_env(server, root, CLEARML_API_ACCESS_KEY=agent_key[0], CLEARML_API_SECRET_KEY=agent_key[1],
                    SHIPYARD_TASK_KEY_TTL_S=str(TTL_S))
    daemon = start_daemon(env, [QUEUE], root / "daemon.log")
    yield {"server": server, "api": server.api(), "root": root, "agent_key": agent_key, "daemon": daemon}
    daemon.stop()
    server.stop()


def _login_fails(server, access: str, secret: str) -> ApiFailure:
    with pytest.raises(ApiFailure) as err:
        Api(server.api_url, access, secret)
    return err.value


def _revoked_after_run(server, access: str, secret: str, timeout: float = 15) -> ApiFailure:
    """The run's key is revoked right after its outcome is reported (so a test that saw the final
    status may still be a moment early): the failed login, once it fails."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            Api(server.api_url, access, secret)
        except ApiFailure as failure:
            return failure
        assert time.monotonic() < deadline, "the run's key still logs in after the run ended"
        time.sleep(0.1)


def test_a_task_gets_its_own_key_that_can_do_a_tasks_work_but_mint_nothing(rig):
    api, server = rig["api"], rig["server"]
    before = create_task(api, "written before", {"repository": "", "entry_point": "x.py", "diff": "print(1)\n"})
    pipeline_q = api.call("queues.create", {"name": "pipeline-steps"})["id"]
    out = rig["root"] / "task-out.json"
    task = create_task(api, "attack: mint keys from a task", {"repository": "", "entry_point": "attack.py",
                                                              "diff": TASK_SCRIPT},
                       queue=QUEUE, hyperparams=_env_section(KEY_TEST_OUT=str(out), KEY_TEST_QUEUE=pipeline_q,
                                                             KEY_TEST_SLEEP=str(TTL_S + 2)))
    doc = wait_status(api, task, timeout=180)
    assert doc["status"] == "completed", doc.get("status_reason")
    seen = json.loads(out.read_text())
    results = seen["results"]

    # The task held a key of its own, of the task role, still alive after its first TTL ran out.
    assert seen["access"] != rig["agent_key"][0]
    assert results["login"] == 200 and results["whoami"] == "task"
    # The attack: no key of any role could be minted, and the key could not extend itself.
    assert {results[f"mint_{role}"] for role in ("admin", "agent", "user", "task", None)} == {403}
    assert results["extend_self"] == 403
    # What tasks do still works: events, reads, clone + enqueue (pipelines, HPO).
    assert (results["events"], results["get_all"], results["clone"], results["enqueue"]) == (200, 1, 200, 200)
    assert "reported with the task key" in task_log(api, task)
    scalars = api.call("events.get_task_events", {"task": task, "event_type": "training_stats_scalar"})["events"]
    assert [(e["metric"], e["value"]) for e in scalars] == [("loss", 0.25)]
    assert api.call("tasks.get_by_id", {"task": seen["clone"]})["task"]["status"] == "queued"
    # Its console never showed the secret.
    assert seen["secret"] not in "\n".join(task_log(api, task))

    # After the run, the key is dead: no login, and the token it held is refused.
    assert _revoked_after_run(server, seen["access"], seen["secret"]).code == 401
    refused = api.raw("tasks.get_all", {"id": [task]}, token=seen["token"]).json()["meta"]
    assert refused["result_code"] == 401
    listed = [line for line in _keys_cli(server.data_dir, "list").splitlines() if line.startswith(seen["access"])]
    assert len(listed) == 1 and "revoked" in listed[0] and "task" in listed[0]
    # Nothing else was lost: the admin and the agent still work, earlier data is intact.
    assert api.call("tasks.get_by_id", {"task": before})["task"]["name"] == "written before"
    Api(server.api_url, *rig["agent_key"])


def test_a_failed_run_revokes_its_key_too(rig):
    api, server = rig["api"], rig["server"]
    out = rig["root"] / "failed-out.json"
    code = ("import json, os\nopen(os.environ['KEY_TEST_OUT'], 'w').write(json.dumps("
            "[os.environ['CLEARML_API_ACCESS_KEY'], os.environ['CLEARML_API_SECRET_KEY']]))\nraise SystemExit(3)\n")
    task = create_task(api, "fails", {"repository": "", "entry_point": "f.py", "diff": code}, queue=QUEUE,
                       hyperparams=_env_section(KEY_TEST_OUT=str(out)))
    doc = wait_status(api, task, timeout=120)
    assert doc["status"] == "failed"
    access, secret = json.loads(out.read_text())
    assert access != rig["agent_key"][0]
    assert _revoked_after_run(server, access, secret).code == 401


def test_roles_on_the_api(server, api):
    """Who may mint, extend and revoke what (a real server, real HTTP)."""
    agent = api.call("auth.create_credentials", {"role": "agent", "label": "agent-a", "expires_in_s": 600})
    other = api.call("auth.create_credentials", {"role": "agent", "label": "agent-b", "expires_in_s": 600})
    user = api.call("auth.create_credentials", {"label": "a machine", "expires_in_s": 600})
    assert user["role"] == "user"   # an admin's default, as the autoscaler relies on
    as_agent, as_other, as_user = (Api(server.api_url, k["access_key"], k["secret_key"]) for k in (agent, other, user))

    for role in ("admin", "agent", "user"):   # an agent mints task keys and nothing else
        with pytest.raises(ApiFailure) as err:
            as_agent.call("auth.create_credentials", {"role": role})
        assert err.value.code == 403, role
    for role in ("task", "admin"):             # a user mints nothing
        with pytest.raises(ApiFailure) as err:
            as_user.call("auth.create_credentials", {"role": role})
        assert err.value.code == 403, role
    with pytest.raises(ApiFailure) as err:
        as_agent.call("auth.create_credentials", {"role": "root"})
    assert err.value.code == 400 and "'role'" in err.value.msg

    mine = as_agent.call("auth.create_credentials", {"label": "task-1", "expires_in_s": 60})
    theirs = as_other.call("auth.create_credentials", {"role": "task", "label": "task-2", "expires_in_s": 60})
    assert mine["role"] == "task"
    assert as_agent.call("auth.extend_credentials", {"access_key": mine["access_key"], "expires_in_s": 120})
    for endpoint in ("auth.extend_credentials", "auth.revoke_credentials"):   # not another agent's keys
        with pytest.raises(ApiFailure) as err:
            as_agent.call(endpoint, {"access_key": theirs["access_key"]})
        assert err.value.code == 403, endpoint
    with pytest.raises(ApiFailure) as err:   # not the agent's own key either: only its minter extends it
        as_agent.call("auth.extend_credentials", {"access_key": agent["access_key"]})
    assert err.value.code == 403
    task_api = Api(server.api_url, theirs["access_key"], theirs["secret_key"])
    with pytest.raises(ApiFailure) as err:   # a task revokes no other key...
        task_api.call("auth.revoke_credentials", {"access_key": mine["access_key"]})
    assert err.value.code == 403
    assert task_api.call("auth.revoke_credentials", {"access_key": theirs["access_key"]}) == {"revoked": 1}
    assert as_agent.call("auth.revoke_credentials", {"access_key": mine["access_key"]}) == {"revoked": 1}
    for key in (mine, theirs):                # ...and revoked keys are dead at once
        assert _login_fails(server, key["access_key"], key["secret_key"]).code == 401
    api.call("auth.revoke_credentials", {"access_key": agent["access_key"]})   # admin: any key
    assert _login_fails(server, agent["access_key"], agent["secret_key"]).code == 401


def test_an_expired_task_key_cannot_log_in(server, api):
    agent = api.call("auth.create_credentials", {"role": "agent", "label": "short", "expires_in_s": 600})
    as_agent = Api(server.api_url, agent["access_key"], agent["secret_key"])
    key = as_agent.call("auth.create_credentials", {"role": "task", "label": "t", "expires_in_s": 1})
    held = Api(server.api_url, key["access_key"], key["secret_key"])
    assert held.call("tasks.get_all", {"only_fields": ["id"]}) is not None
    time.sleep(1.5)
    assert _login_fails(server, key["access_key"], key["secret_key"]).code == 401
    with pytest.raises(ApiFailure) as err:   # the token from before the expiry is refused too
        held.call("tasks.get_all", {"only_fields": ["id"]})
    assert err.value.code == 401
    with pytest.raises(ApiFailure) as err:   # and its agent cannot bring it back
        as_agent.call("auth.extend_credentials", {"access_key": key["access_key"], "expires_in_s": 60})
    assert err.value.code == 400


def test_a_user_key_agent_falls_back_to_its_own_key_and_says_so_once(tmp_path):
    """A server that will not mint (here: the agent holds a `user` key) gets clearml-agent's
    behaviour: tasks run with the agent's key, and the agent's log says so once."""
    server = start_server(tmp_path / "server")
    try:
        user_key = _pair(_keys_cli(server.data_dir, "create", "--role", "user"))
        env = agent_env(server, tmp_path, CLEARML_API_ACCESS_KEY=user_key[0], CLEARML_API_SECRET_KEY=user_key[1])
        daemon = start_daemon(env, ["fallback"], tmp_path / "daemon.log")
        api = server.api()
        code = "import os\nprint('key', os.environ['CLEARML_API_ACCESS_KEY'])\n"
        tasks = [create_task(api, f"fallback {i}", {"repository": "", "entry_point": "k.py", "diff": code},
                             queue="fallback") for i in range(2)]
        for task in tasks:
            doc = wait_status(api, task, timeout=120)
            assert doc["status"] == "completed", doc.get("status_reason")
            assert f"key {user_key[0]}" in task_log(api, task)
        daemon.stop()
        assert daemon.output().count("tasks get this agent's own API key") == 1
    finally:
        server.stop()


class _ReferenceServer:
    """An ApiClient stand-in for a reference ClearML server: no Shipyard extensions."""

    def __init__(self):
        self.calls: list[str] = []

    def server_info(self) -> dict:
        return {"version": "1.16.0"}

    def call(self, endpoint: str, data=None, **_kw) -> dict:
        self.calls.append(endpoint)
        return {}


def test_reference_server_gets_the_agent_key_without_a_mint_call(caplog):
    api = _ReferenceServer()
    keys = TaskKeys(api, ("AGENT", "agent-secret"), ttl_s=60)
    with caplog.at_level(logging.WARNING, logger="shipyard.agent.taskkey"):
        got = [keys.mint(f"task-{i}") for i in range(3)]
        for key in got:
            keys.extend(key)
            keys.revoke(key)
    assert {(k.access_key, k.secret_key, k.minted) for k in got} == {("AGENT", "agent-secret", False)}
    assert api.calls == []   # never asked to mint, extend or revoke; never revokes the agent's key
    assert sum("tasks get this agent's own API key" in r.getMessage() for r in caplog.records) == 1


def test_a_database_from_before_roles_gets_the_minted_by_column(tmp_path):
    db = tmp_path / "shipyard.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE credentials (access_key VARCHAR(64) PRIMARY KEY, secret_hash TEXT NOT NULL, "
                     "name TEXT NOT NULL, role VARCHAR(32) NOT NULL, created FLOAT NOT NULL, "
                     "revoked BOOLEAN NOT NULL, expires FLOAT, instance TEXT)")
        conn.execute("INSERT INTO credentials VALUES ('OLDKEY', 'x', 'old', 'admin', 0, 0, NULL, NULL)")
    store = Store(sqlite_url(tmp_path), upgrade=True)
    try:
        keys = KeyStore(store)
        access, _ = keys.create(role="task", minted_by="OLDKEY", expires=time.time() + 60)
        assert keys.get(access)["minted_by"] == "OLDKEY"
        assert keys.get("OLDKEY")["role"] == "admin" and keys.get("OLDKEY")["minted_by"] is None
    finally:
        store.close()


def test_up_replaces_an_admin_agent_key_from_before_roles(tmp_path):
    from types import SimpleNamespace

    from shipyard.cli.up import _agent_credentials

    store = Store(sqlite_url(tmp_path))
    try:
        state = SimpleNamespace(keys=KeyStore(store))
        old_access, old_secret = state.keys.create(name="local agent (shipyard up)")   # admin, as before
        (tmp_path / "local-agent.key").write_text(f"{old_access} {old_secret}\n")
        access, secret = _agent_credentials(state, tmp_path)
        assert access != old_access and state.keys.get(access)["role"] == "agent"
        assert not state.keys.is_active(old_access)
        assert _agent_credentials(state, tmp_path) == (access, secret)   # kept from then on
    finally:
        store.close()
