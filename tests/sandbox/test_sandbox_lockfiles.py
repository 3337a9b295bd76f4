"""Lock files: which source wins (tables), reading each lock kind, and real installs from a local index."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from sandbox.env_cache import EnvCache
from sandbox.envsource import EnvSource, discover, export_uv_lock, resolve
from sandbox.lockfiles import (
    CONDA_UNSUPPORTED,
    PackageManager,
    SourceFile,
    SourceKind,
    choose,
    classify_file,
    exported_lock,
    pipfile_lock,
    poetry_lock,
)
from sandbox.pyenv import EnvBuilder, probe, select_interpreter
from sandbox.requirements import parse_requirements
from shipyard.errors import RequirementsError
from tests import wheelhouse
from tests.wheelhouse import Wheelhouse

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
UV, POETRY, PIPFILE = SourceFile(SourceKind.UV_LOCK, Path("uv.lock")), SourceFile(
    SourceKind.POETRY_LOCK, Path("poetry.lock")), SourceFile(SourceKind.PIPFILE_LOCK, Path("Pipfile.lock"))
REQS, PYPROJECT = SourceFile(SourceKind.REQUIREMENTS, Path("requirements.txt")), SourceFile(
    SourceKind.PYPROJECT, Path("pyproject.toml"))


@pytest.mark.parametrize(("recorded", "manager", "force", "found", "expected"), [
    (True, PackageManager.PIP, False, [UV, REQS], None),            # recorded packages first
    (False, PackageManager.PIP, False, [REQS, UV], UV),             # none recorded: the lock wins
    (True, PackageManager.PIP, True, [PYPROJECT, PIPFILE], PIPFILE),  # forced: repository files
    (True, PackageManager.UV, False, [REQS, UV], UV),               # uv manager: its lock wins
    (True, PackageManager.UV, False, [POETRY], None),               # ... not another tool's
    (True, PackageManager.POETRY, False, [UV, POETRY], POETRY),     # poetry manager: poetry.lock
    (False, PackageManager.POETRY, False, [UV, POETRY], POETRY),
    (False, PackageManager.PIP, False, [PYPROJECT, REQS], REQS),
    (False, PackageManager.PIP, False, [], None),
])
def test_choose(recorded, manager, force, found, expected):
    assert choose(recorded, manager, force_repo=force, found=found) == expected


def test_conda_is_refused_with_what_to_do():
    with pytest.raises(RequirementsError, match="not support.*'uv' or 'pip'.*Docker image") as caught:
        choose(True, PackageManager.CONDA, force_repo=False, found=[])
    assert str(caught.value) == CONDA_UNSUPPORTED and caught.value.kind == "package_manager_unsupported"


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("uv.lock", None, SourceKind.UV_LOCK),
    ("Pipfile.lock", None, SourceKind.PIPFILE_LOCK),
    ("requirements.txt", "six==1.16.0\n", SourceKind.REQUIREMENTS),
    ("requirements.txt", f"six==1.16.0 --hash={A}\n", SourceKind.HASHED_REQUIREMENTS),
    ("requirements-lock.txt", f"six==1.16.0 \\\n    --hash={A}\n", SourceKind.HASHED_REQUIREMENTS),
    ("requirements-dev.txt", "pytest\n", None),
    ("setup.py", None, None),
])
def test_classify_file(name, text, expected):
    assert classify_file(Path(name), text) == expected


def test_hash_options_are_part_of_the_line_and_the_key():
    reqs = parse_requirements(f"Six==1.16.0 \\\n  --hash={B} --hash {A}\n")
    (six,) = reqs.requirements
    assert six.name == "six" and six.hashes == (B, A)
    assert six.line == f"Six==1.16.0 --hash={B} --hash={A}"
    assert six.canonical == f"six==1.16.0 --hash={A} --hash={B}"
    assert reqs.hashed() and not parse_requirements("six==1.16.0").hashed()
    assert parse_requirements(f"six==1.16.0 --hash={A}").canonical() != parse_requirements(f"six==1.16.0 --hash={B}").canonical()


POETRY_21 = f"""
[[package]]
name = "alpha"
version = "1.0"
optional = false
python-versions = "*"
groups = ["main"]
files = [{{file = "alpha-1.0-py3-none-any.whl", hash = "{A}"}}, {{file = "alpha-1.0.tar.gz", hash = "{B}"}}]

[package.dependencies]
beta = ">=1"

[[package]]
name = "beta"
version = "1.1"
optional = false
python-versions = "*"
groups = ["main"]
markers = "sys_platform == \\"linux\\""
files = [{{file = "beta-1.1-py3-none-any.whl", hash = "{B}"}}]

[[package]]
name = "pytest-ish"
version = "9.0"
optional = false
python-versions = "*"
groups = ["dev"]
files = [{{file = "pytest_ish-9.0-py3-none-any.whl", hash = "{A}"}}]

[metadata]
lock-version = "2.1"
python-versions = ">=3.10"
content-hash = "00"
"""


def test_poetry_lock_21_main_group_with_hashes_and_markers():
    reqs = poetry_lock(POETRY_21)
    assert reqs.install_lines() == [
        "--require-hashes",
        f"alpha==1.0 --hash={A} --hash={B}",
        f'beta==1.1 ; sys_platform == "linux" --hash={B}',
    ]


def test_poetry_lock_20_walks_the_graph_from_pyproject():
    lock = POETRY_21.replace('groups = ["main"]\n', "").replace('groups = ["dev"]\n', "")
    pyproject = '[tool.poetry.dependencies]\npython = "^3.10"\nalpha = "^1.0"\n[tool.poetry.group.dev.dependencies]\npytest-ish = "*"\n'
    assert [r.name for r in poetry_lock(lock, pyproject).requirements if r.name] == ["alpha", "beta"]


def test_poetry_lock_git_source_and_bad_toml():
    lock = ('[[package]]\nname = "lib"\nversion = "0.1"\ngroups = ["main"]\nfiles = []\n[package.source]\n'
            'type = "git"\nurl = "https://example.com/lib.git"\nreference = "main"\n'
            'resolved_reference = "' + "c" * 40 + '"\n')
    reqs = poetry_lock(lock)
    assert reqs.install_lines() == ["lib @ git+https://example.com/lib.git@" + "c" * 40]
    assert reqs.uncacheable_reason() is None
    with pytest.raises(RequirementsError, match="poetry.lock is not valid TOML"):
        poetry_lock("[[package]\n")


def test_pipfile_lock_default_section():
    text = json.dumps({
        "_meta": {"requires": {"python_version": "3.11"}},
        "default": {"alpha": {"hashes": [A], "version": "==1.0", "markers": "python_version >= '3.8'"},
                    "beta": {"hashes": [B], "version": "==1.1", "extras": ["fast"]}},
        "develop": {"pytest": {"hashes": [A], "version": "==8.0"}},
    })
    reqs = pipfile_lock(text)
    assert reqs.python_hint == "3.11"
    assert reqs.install_lines() == ["--require-hashes", f"alpha==1.0 ; python_version >= '3.8' --hash={A}",
                                    f"beta[fast]==1.1 --hash={B}"]
    with pytest.raises(RequirementsError, match="Pipfile.lock is not valid JSON"):
        pipfile_lock("{")


def test_exported_uv_lock_lines(tmp_path):
    text = f"alpha==1.0 \\\n    --hash={A}\n-e ./libs/mine\n"
    reqs = exported_lock(text, tmp_path)
    assert reqs.install_lines() == [f"alpha==1.0 --hash={A}", f"-e {tmp_path / 'libs/mine'}"]
    assert not reqs.hashed()  # the editable line has no hash: uv checks those given, requires none


def test_describe_and_runtime():
    source = EnvSource(exported_lock(f"a==1 --hash={A}\nb==2 --hash={B}\n", Path("/")), "uv.lock", SourceKind.UV_LOCK)
    assert source.describe() == "environment from uv.lock (2 packages, hashes checked)"
    assert source.runtime() == {"environment_source": "uv.lock", "environment": "uv.lock (2 packages, hashes checked)"}
    assert EnvSource(parse_requirements("six"), "task").describe() == "environment from the task's recorded packages (1 package)"
    assert EnvSource(parse_requirements(""), "none").describe().startswith("environment without packages (none recorded")


def test_python_version_strict(tmp_path):
    logged: list[str] = []
    assert select_interpreter(None, "3.99.1", logged.append) == probe(sys.executable)
    assert "requested but not installed here; using" in logged[-1]
    with pytest.raises(RequirementsError, match=r"recorded with Python 3.99, which is not installed.*python_version_strict"):
        select_interpreter(None, "3.99.1", logged.append, strict=True)
    here = "%d.%d" % sys.version_info[:2]
    assert select_interpreter(None, here, logged.append, strict=True).short_version == here


# --- real uv, a local index, no network -----------------------------------------------------------


@pytest.fixture(scope="module")
def house(tmp_path_factory) -> Wheelhouse:
    house = Wheelhouse(tmp_path_factory.mktemp("lock-index"))
    house.add("lk-alpha", "1.0", deps=["lk-beta>=1"])
    house.add("lk-beta", "1.1")
    house.add("lk-win", "1.0", tag="cp311-cp311-win_amd64")
    return house


@pytest.fixture
def lock_builder(house, uv_cache_dir) -> EnvBuilder:
    return EnvBuilder(uv_cache_dir=uv_cache_dir, seed_pip=False, env={"UV_INDEX_URL": house.url})


def test_uv_lock_resolves_and_a_stale_one_fails_with_uvs_words(tmp_path, house, uv_cache_dir, lock_builder):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
                                            'dependencies = ["lk-alpha==1.0"]\n')
    wheelhouse.uv_lock(project, house, uv_cache_dir)
    source = resolve(parse_requirements(""), [project], project, PackageManager.PIP, force_repo=False,
                     uv_export=lambda p: export_uv_lock(lock_builder, p))
    assert source.describe() == "environment from uv.lock (2 packages, hashes checked)"
    assert f"lk-alpha==1.0 --hash={house.sha256('lk-alpha', '1.0')}" in source.requirements.install_lines()
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text().replace("lk-alpha==1.0", "lk-beta"))
    with pytest.raises(RequirementsError, match=r"uv.lock cannot be used: .*needs to be updated"):
        export_uv_lock(lock_builder, project)


def test_a_current_uv_lock_passes_on_a_worker_with_another_index(tmp_path, house, uv_cache_dir):
    """The lock was made against the user's index; the worker installs from its mirror."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0.1"\ndependencies = ["lk-beta"]\n')
    wheelhouse.uv_lock(project, house, uv_cache_dir)
    mirror = tmp_path / "mirror"
    shutil.copytree(house.simple, mirror)
    builder = EnvBuilder(uv_cache_dir=uv_cache_dir, seed_pip=False, env={"UV_INDEX_URL": mirror.as_uri()})
    reqs = exported_lock(export_uv_lock(builder, project), project)
    assert reqs.install_lines() == ["--require-hashes", f"lk-beta==1.1 --hash={house.sha256('lk-beta', '1.1')}"]
    builder.build(probe(sys.executable), reqs, tmp_path / "venv", print)


def test_discover_prefers_the_working_dir_and_ranks_kinds(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "requirements.txt").write_text("six\n")
    (tmp_path / "Pipfile.lock").write_text("{}")
    (tmp_path / "requirements-lock.txt").write_text(f"six==1 --hash={A}\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no dependencies: not a source
    found = discover([tmp_path / "sub", tmp_path])
    assert [(f.kind, f.path.relative_to(tmp_path)) for f in found] == [
        (SourceKind.REQUIREMENTS, Path("sub/requirements.txt")),
        (SourceKind.PIPFILE_LOCK, Path("Pipfile.lock")),
        (SourceKind.HASHED_REQUIREMENTS, Path("requirements-lock.txt")),
    ]


def test_locked_install_checks_hashes(tmp_path, house, lock_builder):
    python = probe(sys.executable)
    good = wheelhouse.poetry_lock(house, [("lk-alpha", "1.0", "main", {"lk-beta": ">=1"}), ("lk-beta", "1.1", "main", {})])
    frozen = lock_builder.build(python, poetry_lock(good), tmp_path / "ok", print)
    assert "lk-alpha==1.0" in frozen and "lk-beta==1.1" in frozen
    bad = wheelhouse.poetry_lock(house, [("lk-alpha", "1.0", "main", {"lk-beta": ">=1"}), ("lk-beta", "1.1", "main", {})],
                                 hash_of={"lk-beta": B})
    with pytest.raises(RequirementsError, match=r"lk-beta.*Hash mismatch"):
        lock_builder.build(python, poetry_lock(bad), tmp_path / "bad", print)


def test_a_wheel_for_another_platform_fails_and_the_cache_keeps_nothing(tmp_path, house, lock_builder):
    cache = EnvCache(tmp_path / "cache", builder=lock_builder, compile_bytecode="off")
    lock = wheelhouse.poetry_lock(house, [("lk-win", "1.0", "main", {})])
    with pytest.raises(RequirementsError, match="lk-win") as caught:
        cache.materialize(poetry_lock(lock), probe(sys.executable), tmp_path / "venv", log=print)
    assert "platform" in str(caught.value) or "compatible" in str(caught.value)
    assert cache.entries() == [] and list((tmp_path / "cache" / "tmp").iterdir()) == []
