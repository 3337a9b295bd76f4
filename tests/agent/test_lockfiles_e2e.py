"""Lock files end to end: a real server, a real daemon, real git repositories holding uv.lock,
poetry.lock, Pipfile.lock and hashed requirements, installed from a local index (no network)."""
from __future__ import annotations

import sys

import pytest

from tests import wheelhouse
from tests.agent_helpers import agent_env, create_task, make_repo, start_daemon, task_log, wait_status
from tests.helpers import start_server
from tests.wheelhouse import Wheelhouse

QUEUE = "locks"
HERE = "%d.%d" % sys.version_info[:2]
TRAIN = "import lk_alpha, lk_beta\nprint('versions', lk_alpha.VERSION, lk_beta.VERSION)\n"
PYPROJECT = ('[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
             'dependencies = ["lk-alpha"]\n')


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("locks-e2e")
    house = Wheelhouse(root / "index")
    house.add_seed_packages()  # the daemon's venvs are seeded with pip: from this index too
    house.add("lk-alpha", "1.0", deps=["lk-beta>=1"])
    house.add("lk-beta", "1.0")
    uv_project = root / "uvproj"
    uv_project.mkdir()
    (uv_project / "pyproject.toml").write_text(PYPROJECT)
    uv_lock = wheelhouse.uv_lock(uv_project, house, root / "uv-cache")
    house.add("lk-alpha", "2.0", deps=["lk-beta>=1"])  # newer versions a fresh resolve would take
    house.add("lk-beta", "1.1")
    server = start_server(root / "server")
    env = agent_env(server, root, UV_INDEX_URL=house.url, SHIPYARD_PYTHON_VERSION_STRICT="1")
    daemon = start_daemon(env, [QUEUE], root / "daemon.log")
    yield {"api": server.api(), "root": root, "house": house, "uv_lock": uv_lock}
    daemon.stop()
    server.stop()


def run(rig, name: str, files: dict[str, str], pip: str | None = None) -> tuple[dict, str]:
    repo, commit = make_repo(rig["root"] / "repos" / name, {"train.py": TRAIN, **files})
    script: dict = {"repository": str(repo), "version_num": commit, "entry_point": "train.py"}
    if pip is not None:
        script["requirements"] = {"pip": pip}
    task = create_task(rig["api"], name, script, queue=QUEUE)
    return wait_status(rig["api"], task, timeout=180), "\n".join(task_log(rig["api"], task))


def poetry_files(house: Wheelhouse, **hash_of: str) -> dict[str, str]:
    """main: lk-alpha 1.0 -> lk-beta 1.0; dev: a package the index does not have (never installed)."""
    lock = wheelhouse.poetry_lock(house, [("lk-alpha", "1.0", "main", {"lk-beta": ">=1"}),
                                          ("lk-beta", "1.0", "main", {})], hash_of=hash_of)
    lock += ('\n[[package]]\nname = "lk-devonly"\nversion = "1.0"\noptional = false\npython-versions = "*"\n'
             'groups = ["dev"]\nfiles = [{file = "lk_devonly-1.0-py3-none-any.whl", hash = "sha256:'
             + "d" * 64 + '"}]\n')
    pyproject = ('[tool.poetry]\nname = "proj"\nversion = "0.1"\n[tool.poetry.dependencies]\npython = ">=3.10"\n'
                 'lk-alpha = "1.0"\n[tool.poetry.group.dev.dependencies]\nlk-devonly = "*"\n')
    return {"pyproject.toml": pyproject, "poetry.lock": lock}


def test_uv_lock_installs_exactly_the_lock(rig):
    doc, log = run(rig, "uv-lock", {"pyproject.toml": PYPROJECT, "uv.lock": rig["uv_lock"]})
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "environment from uv.lock (2 packages, hashes checked)" in log
    assert "versions 1.0 1.0" in log  # the lock's versions, not the index's newest
    runtime = doc.get("runtime") or {}
    assert runtime.get("environment_source") == "uv.lock"
    assert runtime.get("python_version", "").startswith(HERE)


def test_poetry_lock_main_group(rig):
    doc, log = run(rig, "poetry-lock", poetry_files(rig["house"]))
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "environment from poetry.lock (2 packages, hashes checked)" in log
    assert "versions 1.0 1.0" in log


def test_recorded_packages_come_first(rig):
    doc, log = run(rig, "recorded-first", poetry_files(rig["house"]), pip="lk-alpha==2.0\nlk-beta==1.1\n")
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "environment from the task's recorded packages (2 packages)" in log
    assert "versions 2.0 1.1" in log


def test_pipfile_lock(rig):
    house = rig["house"]
    lock = wheelhouse.pipfile_lock(house, {"lk-alpha": "1.0", "lk-beta": "1.1"}, {"lk-devonly": "1.0"}, HERE)
    doc, log = run(rig, "pipfile-lock", {"Pipfile.lock": lock})
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "environment from Pipfile.lock (2 packages, hashes checked)" in log
    assert "versions 1.0 1.1" in log


def test_hashed_requirements_file(rig):
    house = rig["house"]
    text = "".join(f"{n}=={v} \\\n    --hash={house.sha256(n, v)}\n" for n, v in (("lk-alpha", "2.0"), ("lk-beta", "1.0")))
    doc, log = run(rig, "hashed-reqs", {"requirements.txt": text})
    assert doc["status"] == "completed", doc.get("status_reason")
    assert "environment from requirements.txt (2 packages, hashes checked)" in log
    assert "versions 2.0 1.0" in log


def test_hash_mismatch_fails_the_build_and_caches_nothing(rig):
    doc, log = run(rig, "hash-mismatch", poetry_files(rig["house"], **{"lk-beta": "sha256:" + "0" * 64}))
    assert doc["status"] == "failed"
    reason = doc.get("status_reason") or ""
    assert "Hash mismatch" in reason and "\n" not in reason
    assert "uv: " in log and "Hash mismatch for `lk-beta==1.0`" in log  # uv's own words in the console
    leftovers = [p for p in (rig["root"] / "cache").rglob("tmp/*") if p.is_dir()]
    assert leftovers == []


def test_stale_uv_lock_fails_with_uvs_message(rig):
    stale = PYPROJECT.replace('["lk-alpha"]', '["lk-alpha", "lk-beta"]')
    doc, log = run(rig, "uv-stale", {"pyproject.toml": stale, "uv.lock": rig["uv_lock"]})
    assert doc["status"] == "failed"
    assert "uv.lock cannot be used" in (doc.get("status_reason") or "")
    assert "needs to be updated" in log


def test_recorded_python_missing_with_strict_fails(rig):
    doc, log = run(rig, "py-strict", {}, pip="# Python 3.99.0 (main)\nlk-beta==1.0\n")
    assert doc["status"] == "failed"
    assert "recorded with Python 3.99, which is not installed" in (doc.get("status_reason") or "")
    assert "python_version_strict" in log.strip().splitlines()[-1]
