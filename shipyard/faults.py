"""Fault-injection points ("failpoints") for the fault suite in tests/faults.

Inactive unless the SHIPYARD_FAULTS environment variable names them (comma-separated). An
active point writes a marker file named after it into $SHIPYARD_FAULTS_DIR and then holds the
calling thread, so a test can kill the process at exactly that moment.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

_ACTIVE = frozenset(filter(None, os.environ.get("SHIPYARD_FAULTS", "").split(",")))


def checkpoint(name: str) -> None:
    """Hold here forever when active; or, with SHIPYARD_FAULT_DELAY_<NAME>=<seconds>, be slow."""
    delay = os.environ.get(f"SHIPYARD_FAULT_DELAY_{name.upper()}")
    if delay:
        time.sleep(float(delay))
    if name not in _ACTIVE:
        return
    directory = Path(os.environ.get("SHIPYARD_FAULTS_DIR") or ".")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(str(os.getpid()))
    while True:  # held until the test kills this process
        time.sleep(3600)
