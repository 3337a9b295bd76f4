"""Files listener round trip and confinement; SIGKILL durability; key management."""
from __future__ import annotations

import signal
import subprocess
import sys

import requests

from tests.helpers import ACCESS_KEY, Api, ApiFailure, start_server


def test_files_round_trip(server, api):
    auth = {"Authorization": f"Bearer {api.token}"}
    path = "/proj/task.abc/artifacts/stats/stats.json"
    resp = requests.post(f"{server.files_url}/", files={path: (path, b'{"a": 1}')}, headers=auth, timeout=5)
    assert resp.status_code == 200 and resp.json() == [path]
    got = requests.get(f"{server.files_url}{path}", headers=auth, timeout=5)
    assert got.status_code == 200 and got.content == b'{"a": 1}'
    assert requests.get(f"{server.files_url}{path}", timeout=5).status_code == 401
    assert requests.delete(f"{server.files_url}{path}", headers=auth, timeout=5).status_code == 200
    assert requests.get(f"{server.files_url}{path}", headers=auth, timeout=5).status_code == 404


def test_files_path_traversal_refused(server, api):
    auth = {"Authorization": f"Bearer {api.token}"}
    for evil in ("../../etc/evil", "/../outside.txt", "a/../../b"):
        resp = requests.post(f"{server.files_url}/", files={evil: ("x", b"x")}, headers=auth, timeout=5)
        assert resp.status_code == 403, evil
    assert not (server.data_dir / "outside.txt").exists()
    resp = requests.get(f"{server.files_url}/..%2F..%2Fetc%2Fpasswd", headers=auth, timeout=5)
    assert resp.status_code in (403, 404)
    assert b"root:x:0:0" not in resp.content


def test_acknowledged_writes_survive_sigkill(tmp_path):
    srv = start_server(tmp_path / "d")
    api = srv.api()
    ids = [api.call("tasks.create", {"name": f"k{i}", "type": "training"})["id"] for i in range(50)]
    api.call("tasks.enqueue", {"task": ids[-1], "queue_name": "durable"})
    srv.stop(signal.SIGKILL)
    again = start_server(tmp_path / "d", ports=srv.ports)
    try:
        api2 = again.api()
        found = {t["id"] for t in api2.call("tasks.get_all", {"id": ids})["tasks"]}
        assert found == set(ids)
        queue = api2.call("queues.get_all", {"name": "^durable$"})["queues"][0]
        assert [e["task"] for e in queue["entries"]] == [ids[-1]]
    finally:
        again.stop()


def test_generated_credentials_and_key_commands(tmp_path):
    data = tmp_path / "gen"
    proc = subprocess.run([sys.executable, "-m", "shipyard", "keys", "--data-dir", str(data), "create",
                           "--name", "ci"], capture_output=True, text=True, check=True)
    lines = dict(line.split("=", 1) for line in proc.stdout.split())
    srv = start_server(data)
    try:
        api = Api(srv.api_url, lines["CLEARML_API_ACCESS_KEY"], lines["CLEARML_API_SECRET_KEY"])
        assert api.call("tasks.get_all", {"id": ["0" * 32]}) == {"tasks": []}
        listing = subprocess.run([sys.executable, "-m", "shipyard", "keys", "--data-dir", str(data), "list"],
                                 capture_output=True, text=True, check=True).stdout
        assert lines["CLEARML_API_ACCESS_KEY"] in listing and ACCESS_KEY in listing
        assert lines["CLEARML_API_SECRET_KEY"] not in listing
        subprocess.run([sys.executable, "-m", "shipyard", "keys", "--data-dir", str(data), "revoke",
                        lines["CLEARML_API_ACCESS_KEY"]], check=True, capture_output=True)
        try:
            Api(srv.api_url, lines["CLEARML_API_ACCESS_KEY"], lines["CLEARML_API_SECRET_KEY"])
            raise AssertionError("revoked key still logs in")
        except ApiFailure as exc:
            assert exc.code == 401
    finally:
        srv.stop()


def test_first_start_generates_and_prints_credentials(tmp_path):
    from tests.helpers import free_port
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen([sys.executable, "-m", "shipyard", "server", "--data-dir", str(tmp_path / "first"),
                             "--api-port", ports[0], "--files-port", ports[1], "--web-port", ports[2]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={k: v for k, v in __import__("os").environ.items()
                                 if not k.startswith("SHIPYARD_")})
    try:
        out = []
        for line in proc.stdout:
            out.append(line)
            if "CLEARML_WEB_HOST" in line:
                break
        text = "".join(out)
        assert f"http://localhost:{ports[0]}" in text and "CLEARML_API_SECRET_KEY=" in text
        secret = text.split("CLEARML_API_SECRET_KEY=")[1].split()[0]
        access = text.split("CLEARML_API_ACCESS_KEY=")[1].split()[0]
        Api(f"http://127.0.0.1:{ports[0]}", access, secret)
        db = (tmp_path / "first" / "shipyard.db").read_bytes()
        assert secret.encode() not in db
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0
