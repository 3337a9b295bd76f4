"""Seeding pip beside the install (sandbox/seed.py): what is moved, what the requirements keep."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sandbox import seed
from sandbox.pyenv import probe
from sandbox.requirements import parse_requirements
from shipyard.errors import RequirementsError

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
