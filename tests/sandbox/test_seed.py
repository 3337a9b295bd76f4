"""Seeding pip beside the install (sandbox/seed.py): what is moved, what the requirements keep."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import seed
from sandbox.pyenv import find_uv, probe
from sandbox.requirements import parse_requirements
from shipyard.errors import RequirementsError
from tests.package_index import PackageIndex

SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def _dist(venv: Path, name: str, version: str, files: dict[str, str], scripts: tuple[str, ...] = ()) -> None:
    site = venv / SITE
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Name: {name}\nVersion: {version}\n")
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    (venv / "bin").mkdir(exist_ok=True)
    for script in scripts:
        (venv / "bin" / script).write_text(f"#!{venv}/bin/python\nimport {name}\n")
        (venv / "bin" / script).chmod(0o755)
    record = [f"{rel},sha256=x,1" for rel in [*files, f"{info.name}/METADATA"]]
    record += [f"../../../bin/{script},sha256=x,1" for script in scripts] + [f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_merge_moves_what_the_target_lacks_and_keeps_what_the_requirements_installed(tmp_path):
    seeded, target = tmp_path / "v.seed", tmp_path / "v"
    _dist(seeded, "pip", "26.3", {"pip/__init__.py": "seeded = True\n"}, scripts=("pip", "pip3"))
    _dist(seeded, "setuptools", "84.2.1", {"setuptools/__init__.py": "seeded = True\n",
                                           "distutils-precedence.pth": "import os\n"})
    _dist(target, "setuptools", "60.0.0", {"setuptools/__init__.py": "pinned = True\n"})

    assert seed.merge(seeded, target) == ["pip"]

    site = target / SITE
    assert (site / "pip" / "__init__.py").read_text() == "seeded = True\n"
    assert (site / "pip-26.3.dist-info" / "RECORD").is_file()
    assert (site / "setuptools" / "__init__.py").read_text() == "pinned = True\n"   # the requirements' pin wins
    assert not (site / "setuptools-84.2.1.dist-info").exists() and not (site / "distutils-precedence.pth").exists()
    script = target / "bin" / "pip"
    assert script.read_text() == f"#!{target}/bin/python\nimport pip\n" and script.stat().st_mode & 0o111


def test_seeded_build_has_pip_and_leaves_no_seed_dir(builder, tmp_path):
    frozen = builder.build(probe(sys.executable), parse_requirements("six==1.16.0"), tmp_path / "venv", print)
    assert "six==1.16.0" in frozen and any(line.startswith("pip==") for line in frozen)
    assert (tmp_path / "venv" / "bin" / "pip").read_text().startswith(f"#!{tmp_path / 'venv'}/bin/python")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["venv"]


def test_a_failed_install_stops_the_seed_and_removes_it(builder, tmp_path):
    with pytest.raises(RequirementsError):
        builder.build(probe(sys.executable), parse_requirements("nosuchpkg==9.9"), tmp_path / "venv", print)
    assert not seed.seed_dir(tmp_path / "venv").exists()


def test_the_seed_comes_from_uvs_cache_and_asks_the_index_only_when_the_cache_lacks_it(tmp_path):
    # Given a local index with the seed packages and a uv cache that has never seen them
    index = PackageIndex(tmp_path / "index")
    for name in ("pip", "setuptools", "wheel"):
        index.add_wheel("simple", name, "99.0")
    index.start()
    uv = find_uv()
    assert uv is not None
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_INDEX_URL": index.url("simple"),
           "UV_NO_CONFIG": "1", "UV_NO_PROGRESS": "1"}
    env.pop("UV_FIND_LINKS", None)
    env.pop("UV_OFFLINE", None)
    try:
        asked, fetched = [], []
        for name in ("first", "second"):
            target = tmp_path / name
            subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(target)], env=env, check=True)
            seeding = seed.start_seed(uv, Path(sys.executable), target, env)
            assert seed.finish_seed(seeding, target, timeout=120) is None
            assert (target / SITE / "pip-99.0.dist-info").is_dir() and not seed.seed_dir(target).exists()
            asked.append(seeding.asked_index)
            fetched.append(len(index.requests))
    finally:
        index.stop()
    # Then the first seed, offline, found nothing and asked the index; the second came from the
    # cache without one request
    assert asked == [True, False]
    assert fetched[0] > 0 and fetched[1] == fetched[0]


def test_a_user_who_set_uv_offline_gets_the_offline_failure(tmp_path):
    uv = find_uv()
    assert uv is not None
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "empty-cache"), "UV_OFFLINE": "1", "UV_NO_CONFIG": "1"}
    env.pop("UV_FIND_LINKS", None)
    target = tmp_path / "v"
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(target)], env=env, check=True)
    seeding = seed.start_seed(uv, Path(sys.executable), target, env)
    why = seed.finish_seed(seeding, target, timeout=120)
    assert why and seeding.asked_index and not seed.seed_dir(target).exists()
