"""Environment cache faults: disk full, a corrupt entry, one environment built by two agents at once."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.agent_helpers import create_task, task_log, wait_status
from tests.faults.common import faulty_agent, script
from tests.faults.conftest import record
from tests.helpers import start_server

SIX = "import six\nprint('six', six.__version__)\n"


@pytest.fixture()
def server(tmp_path):
    srv = start_server(tmp_path / "server", env={"SHIPYARD_REAPER_INTERVAL_S": "0.2"})
    yield srv
    srv.stop()


def _six_task(api, name: str, version: str = "1.16.0") -> str:
    return create_task(api, name, {**script(SIX), "requirements": {"pip": f"six=={version}\n"}}, queue="cache")


def _entries(cache: Path) -> list[Path]:
    return [p for p in (cache / "venvs").rglob("COMPLETE") if p.parent.name != "venv"]


def test_corrupt_entry_is_rebuilt(server, tmp_path):
    api = server.api()
    agent = faulty_agent(server, tmp_path, "cache", "agent")
    try:
        first = _six_task(api, "first")
        assert wait_status(api, first)["status"] == "completed"
        entries = _entries(tmp_path / "shared-cache")
        assert len(entries) == 1
        entries[0].unlink()                              # the entry loses its completion marker
        shutil.rmtree(entries[0].parent / "venv" / "lib", ignore_errors=True)  # and half its files
        started = time.monotonic()
        second = _six_task(api, "second")
        doc = wait_status(api, second)
        log = "\n".join(task_log(api, second))
        record("cache: corrupt entry", 1, int(doc["status"] != "completed"), 0, int("built" in log),
               time.monotonic() - started)
        assert doc["status"] == "completed" and "six 1.16.0" in log and "(built)" in log
    finally:
        agent.stop()


def test_two_agents_build_one_environment_at_once(server, tmp_path):
    api = server.api()
    agents = [faulty_agent(server, tmp_path, "cache", f"agent-{i}") for i in range(2)]
    try:
        started = time.monotonic()
        tasks = [_six_task(api, f"twin-{i}", "1.15.0") for i in range(2)]
        docs = [wait_status(api, task, timeout=240) for task in tasks]
        logs = ["\n".join(task_log(api, task)) for task in tasks]
        record("cache: one env built by two agents at once", 2, sum(d["status"] != "completed" for d in docs), 0,
               sum(d["status"] == "completed" for d in docs), time.monotonic() - started)
        assert all(d["status"] == "completed" for d in docs)
        assert all("six 1.15.0" in log for log in logs)
        assert sum("(built)" in log for log in logs) == 1          # one build, one reuse
        assert len(_entries(tmp_path / "shared-cache")) == 1
    finally:
        for agent in agents:
            agent.stop()


def test_disk_full_fails_as_infrastructure_and_agent_recovers(server, tmp_path):
    cache = tmp_path / "small-cache"
    cache.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(cache)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    api = server.api()
    try:
        filler = cache / "filler"
        subprocess.run(["fallocate", "-l", "23m", str(filler)], check=True)
        agent = faulty_agent(server, tmp_path, "cache", "agent", SHIPYARD_CACHE_DIR=str(cache),
                             SHIPYARD_WORK_DIR=str(cache / "work"))
        try:
            task = _six_task(api, "full")
            doc = wait_status(api, task, {"failed", "completed"}, timeout=240)
            assert doc["status"] == "failed"
            assert doc["status_reason"].startswith("infrastructure"), doc["status_reason"]
            assert len(doc["shipyard_attempts"]) == 3          # retried, then given up
            filler.unlink()
            started = time.monotonic()
            again = _six_task(api, "after-free")
            doc2 = wait_status(api, again, timeout=240)
            record("cache: disk full", 2, 0, 0, int(doc2["status"] == "completed"), time.monotonic() - started)
            assert doc2["status"] == "completed", doc2["status_reason"]
        finally:
            agent.stop()
    finally:
        subprocess.run(["umount", "-l", str(cache)], capture_output=True)
