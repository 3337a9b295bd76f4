"""Fault suite fixtures and the results table written at the end of the session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

RESULTS: list[dict] = []


def record(fault: str, tasks: int, lost: int, duplicated: int, recovered: int, seconds: float) -> None:
    RESULTS.append({"fault": fault, "tasks": tasks, "lost": lost, "duplicated": duplicated,
                    "recovered": recovered, "time_to_recover_s": round(seconds, 1)})


def pytest_sessionfinish(session, exitstatus):
    if not RESULTS:
        return
    lines = ["| fault | tasks | lost | duplicated | recovered | time to recover (s) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['fault']} | {r['tasks']} | {r['lost']} | {r['duplicated']} | {r['recovered']} | "
              f"{r['time_to_recover_s']} |" for r in RESULTS]
    table = "\n".join(lines)
    out = Path(os.environ.get("SHIPYARD_TEST_ARTIFACTS", "/tmp/shipyard-test-artifacts")) / "fault-results.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    print(f"\nfault-injection results ({out}):\n{table}")


@pytest.fixture()
def runs_dir(tmp_path) -> Path:
    """Where fault-test tasks note each start and end of a run (to count complete runs)."""
    path = tmp_path / "runs"
    path.mkdir()
    return path
