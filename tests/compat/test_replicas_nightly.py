"""Nightly: the whole compat set against two replicas on one PostgreSQL behind nginx."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import replicas
from tests.compat.conftest import TARGET_ENV

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.nightly
@pytest.mark.skipif(not replicas.available(), reason="needs PostgreSQL and nginx (scripts/test.sh)")
def test_the_whole_compat_set_behind_nginx(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/compat",
                           "-m", "compat and not nightly", f"--basetemp={tmp_path / 'run'}"],
                          cwd=ROOT, env={**os.environ, TARGET_ENV: "replicas"}, timeout=3 * 3600,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-8000:]
