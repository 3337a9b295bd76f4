"""The build step's choice of environment source under the agent's settings (no installs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.execution.build import environment_source
from sandbox.git_workspace import Workspace
from shipyard.client.config import load_settings
from shipyard.errors import RequirementsError

A = "sha256:" + "a" * 64
TASK = {"script": {"requirements": {"pip": "# Python 3.11.4\nsix==1.16.0\n"}}}
POETRY_LOCK = f'[[package]]\nname = "six"\nversion = "1.17.0"\ngroups = ["main"]\nfiles = [{{file = "six.whl", hash = "{A}"}}]\n'
PIPFILE_LOCK = json.dumps({"default": {"six": {"hashes": [A], "version": "==1.15.0"}}})


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    (tmp_path / "poetry.lock").write_text(POETRY_LOCK)
    (tmp_path / "Pipfile.lock").write_text(PIPFILE_LOCK)
    return Workspace(tmp_path, tmp_path, tmp_path / "train.py", None, None)


def settings(tmp_path: Path, conf: str = "", **env: str):
    path = tmp_path / "clearml.conf"
    path.write_text(conf)
    return load_settings(env={"HOME": str(tmp_path / "home"), **env}, config_file=path)


@pytest.mark.parametrize(("conf", "env", "label", "pinned"), [
    ("", {}, "task", "six==1.16.0"),
    ("agent.package_manager.force_repo_requirements_txt: true", {}, "poetry.lock", f"six==1.17.0 --hash={A}"),
    ("agent.package_manager.type: poetry", {}, "poetry.lock", f"six==1.17.0 --hash={A}"),
    ("agent.package_manager.type: uv", {}, "task", "six==1.16.0"),  # no uv.lock here
    ("", {"SHIPYARD_FORCE_REPO_REQUIREMENTS": "1"}, "poetry.lock", f"six==1.17.0 --hash={A}"),
])
def test_source_under_settings(tmp_path, workspace, conf, env, label, pinned):
    source = environment_source(TASK, workspace, settings(tmp_path, conf, **env))
    assert source.label == label
    assert pinned in source.requirements.install_lines()
    assert source.requirements.python_hint == "3.11.4"  # the recorded Python holds whatever the source


def test_poetry_type_installs_with_uv_and_conda_fails_the_task(tmp_path, workspace):
    poetry = settings(tmp_path, "agent.package_manager.type: poetry")
    assert poetry.agent.uv_enabled is True and poetry.agent.package_manager_type == "poetry"
    conda = settings(tmp_path, "agent.package_manager.type: conda")
    with pytest.raises(RequirementsError, match="'conda', which Shipyard does not support"):
        environment_source(TASK, workspace, conda)
