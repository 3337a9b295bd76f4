"""build_task builds a task's recorded environment while its code is checked out (issue 24's
pickup): the errors a person sees stay the same, and no build is left running in the run's
directory when the checkout fails."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent.execution.build import build_task
from shipyard.client.config import load_settings
from shipyard.errors import ShipyardError
from tests.agent_helpers import make_repo


@pytest.fixture
def settings(tmp_path: Path):
    env = {"HOME": str(tmp_path), "SHIPYARD_WORK_DIR": str(tmp_path / "work"), "SHIPYARD_CACHE_DIR": str(tmp_path / "c"),
           "UV_CACHE_DIR": os.environ.get("SHIPYARD_TEST_UV_CACHE", str(Path.home() / ".cache" / "shipyard-test-uv"))}
    return load_settings({}, env=env)


def test_recorded_requirements_build_alongside_the_checkout(settings, tmp_path):
    repo, commit = make_repo(tmp_path / "repo", {"train.py": "print('ok')\n"})
    task = {"script": {"repository": str(repo), "version_num": commit, "entry_point": "train.py",
                       "requirements": {"pip": "six==1.16.0\n"}}}
    lines: list[str] = []
    built = build_task(task, tmp_path / "run", settings, lines.append)
    assert built.requirements_source == "task" and "environment from the task's recorded packages (1 package)" in lines
    assert (tmp_path / "run" / "code" / "train.py").is_file() and built.env.python.exists()
    assert any(line.startswith("six==1.16.0") for line in built.env.frozen)


def test_a_failed_checkout_wins_and_waits_for_the_build(settings, tmp_path):
    task = {"script": {"repository": str(tmp_path / "no-such-repo"), "entry_point": "train.py",
                       "requirements": {"pip": "shipyard-no-such-package-xyz==9.9.9\n"}}}
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ShipyardError) as caught:
        build_task(task, tmp_path / "run", settings, lambda _line: None)
    assert "repository" in str(caught.value)
    assert "materialize" not in {t.name for t in threading.enumerate()} - before
