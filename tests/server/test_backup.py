"""Backups: `shipyard backup` of a running SQLite server while tasks, events and files are being
written, restored by `shipyard restore` into a fresh data dir and read back through a new
server's API; a damaged or misplaced restore is refused. (The PostgreSQL route, pg_dump and
pg_restore, is tested on the upgraded previous-release database in test_migrations.py.)"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import time

import requests

from server.storage.store import Store, sqlite_url
from shipyard.cli import main
from tests.helpers import Api, start_server


def shipyard(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shipyard", *args], capture_output=True, text=True, timeout=120)


class Writer(threading.Thread):
    """Creates tasks, each with a log batch and a stored file, until stopped; records what was acknowledged when."""

    def __init__(self, server) -> None:
        super().__init__(daemon=True)
        self.api, self.files_url = server.api(), server.files_url
        self.acked: list[tuple[float, str, bytes]] = []  # (when, task id, its file's content)
        self.stop = threading.Event()

    def run(self) -> None:
        auth = {"Authorization": f"Bearer {self.api.token}"}
        n = 0
        while not self.stop.is_set():
            task = self.api.call("tasks.create", {"name": f"w{n}", "type": "training"})["id"]
            self.api.events([{"task": task, "type": "log", "level": "info", "msg": f"{task} line {i}",
                              "timestamp": 1_700_000_000_000 + i} for i in range(3)])
            content = task.encode() * 100
            resp = requests.post(f"{self.files_url}/", files={f"/w/{task}.bin": (f"{task}.bin", content)},
                                 headers=auth, timeout=30)
            assert resp.status_code == 200, resp.text
            self.acked.append((time.monotonic(), task, content))
            n += 1

    def done_before(self, instant: float) -> list[tuple[float, str, bytes]]:
        return [entry for entry in list(self.acked) if entry[0] < instant]


def read_every_task(api: Api) -> dict[str, dict]:
    tasks = api.call("tasks.get_all", {"only_fields": ["id"]})["tasks"]
    return {t["id"]: api.call("tasks.get_by_id", {"task": t["id"]})["task"] for t in tasks}


def test_a_running_server_is_backed_up_and_restored_into_a_fresh_one(tmp_path):
    server = start_server(tmp_path / "live")
    writer = Writer(server)
    writer.start()
    try:
        while len(writer.acked) < 20 and writer.is_alive():
            time.sleep(0.05)
        assert writer.is_alive(), "the writer failed before the backup (see its thread's traceback)"
        started = time.monotonic()
        made = shipyard("backup", str(tmp_path / "b.tar.gz"), "--data-dir", str(server.data_dir))
        assert made.returncode == 0, made.stderr
        more = len(writer.acked) + 3  # writes go on after the backup, and must not be in it
        while len(writer.acked) < more and writer.is_alive():
            time.sleep(0.05)
    finally:
        writer.stop.set()
        writer.join(30)
        server.stop()
    before = writer.done_before(started)
    assert main(["restore", str(tmp_path / "b.tar.gz"), "--data-dir", str(tmp_path / "new")]) in (0, None)
    fresh = start_server(tmp_path / "new")
    try:
        api = fresh.api()
        tasks = read_every_task(api)
        assert {task for _, task, _ in before} <= set(tasks) <= {task for _, task, _ in writer.acked}
        assert len(tasks) < len(writer.acked), "the writes after the backup are not in it"
        auth = {"Authorization": f"Bearer {api.token}"}
        for _, task, content in before:
            log = api.call("events.get_task_log", {"task": task, "batch_size": 10})["events"]
            assert sorted(e["msg"] for e in log) == [f"{task} line {i}" for i in range(3)]
            assert requests.get(f"{fresh.files_url}/w/{task}.bin", headers=auth, timeout=10).content == content
    finally:
        fresh.stop()


def test_restore_refuses_an_occupied_data_dir_and_a_damaged_archive(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    Store(sqlite_url(data)).close()
    assert main(["backup", str(tmp_path / "b.tar"), "--data-dir", str(data)]) in (0, None)
    assert main(["restore", str(tmp_path / "b.tar"), "--data-dir", str(data)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "b.tar"), "--data-dir", str(data), "--force"]) in (0, None)
    assert len(list(data.glob("before-restore-*/shipyard.db"))) == 1, "what was there is kept aside"
    with tarfile.open(tmp_path / "b.tar") as src, tarfile.open(tmp_path / "bad.tar", "w") as dst:
        for member in src:
            data_bytes = src.extractfile(member).read()
            if member.name == "manifest.json":
                data_bytes = json.dumps({**json.loads(data_bytes), "db_sha256": "0" * 64}).encode()
                member.size = len(data_bytes)
            dst.addfile(member, io.BytesIO(data_bytes))
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "bad.tar"), "--data-dir", str(tmp_path / "other")]) == 2
    assert "damaged" in capsys.readouterr().err
    assert not (tmp_path / "other" / "shipyard.db").exists()
