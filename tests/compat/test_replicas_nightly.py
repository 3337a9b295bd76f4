"""Nightly: the whole compat set against two replicas on one PostgreSQL behind nginx.

The inner run's output goes to `compat.log` in the test's temporary directory as it runs (follow
it with `tail -f`); its last lines are the failure message."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import replicas
from tests.compat.conftest import TARGET_ENV

ROOT = Path(__file__).resolve().parents[2]
LIMIT_S = 3 * 3600


@pytest.mark.nightly
@pytest.mark.timeout(LIMIT_S + 120)  # the inner run's own limit ends it first (the default is 300 s)
@pytest.mark.skipif(not replicas.available(), reason="needs PostgreSQL and nginx (scripts/test.sh)")
def test_the_whole_compat_set_behind_nginx(tmp_path):
    log = tmp_path / "compat.log"
    with log.open("w") as out:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/compat",
                               "-m", "compat and not nightly", f"--basetemp={tmp_path / 'run'}"],
                              cwd=ROOT, env={**os.environ, TARGET_ENV: "replicas"}, timeout=LIMIT_S,
                              stdout=out, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, log.read_text()[-8000:]
