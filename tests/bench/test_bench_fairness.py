"""bench/bench_fairness.py's claim, kept: on its seeded day, fair share + packing is ahead of FIFO
on GPU utilisation and on Jain's index of the shares received (figures: docs/scheduling.md)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_fairness.py"


def test_fair_share_with_packing_beats_fifo():
    spec = importlib.util.spec_from_file_location("bench_fairness", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_fairness"] = bench   # its dataclasses look their module up
    spec.loader.exec_module(bench)
    rows = {row["name"]: row for row in bench.compare(seed=7, step=120.0)}
    fifo, packed = rows["fifo"], rows["fair+pack"]
    assert packed["util"] > fifo["util"] and packed["jain"] > fifo["jain"], rows
    assert all(row["users"] for row in rows.values())
