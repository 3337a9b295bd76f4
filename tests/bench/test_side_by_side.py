"""Smoke test of bench/side_by_side.py's helpers: the loopback index, one server, both daemons
(the real clearml-agent 3.0.3 and `shipyard daemon`), one trivial task each, the report. The
bench itself (minutes, noisy figures) is not part of the suite: `python bench/side_by_side.py`."""
from __future__ import annotations

import argparse

import pytest

from bench import side_by_side as sxs
from bench.pypi_mirror import ensure_wheelhouse
from tests import peers

pytestmark = [pytest.mark.compat, pytest.mark.slow, pytest.mark.timeout(180)]

# what the two installers fetch for a task without requirements (clearml-agent's pinned pip;
# uv's seed packages)
SMALL = ["pip", "pip<22.3", "setuptools", "wheel"]


def test_compare_lines_tells_split_from_lost():
    expected = sxs.expected_lines(4)
    a, b, _c, d = sorted(expected)
    msgs = [f"{a}\n{b[:10]}", f"{b[10:]}\n", f"{d}\n{d}"]   # b split across events, c missing, d twice
    result = sxs.compare_lines(msgs, expected)
    assert (result["intact"], result["split"], result["lost"], result["duplicated"]) == (2, 1, 1, 1)
    # Shipyard's events: one whole line per event, no trailing newline -> nothing split
    assert sxs.compare_lines(sorted(expected), expected)["split"] == 0


def test_both_agents_run_one_trivial_task(tmp_path):
    try:
        agent_bin = peers.ensure("agent")
        wheels = ensure_wheelhouse(SMALL)
    except Exception as exc:  # noqa: BLE001 - no package index reachable: say so
        pytest.skip(f"peers or wheelhouse unavailable: {exc}")
    with sxs.Bench(wheels, agent_bin, work=tmp_path / "bench") as bench:
        runs = {}
        for name, agent in bench.agents.items():
            run = sxs.check(sxs.run_task(bench.api, agent, "smoke", sxs.TRIVIAL, timeout=120), "smoke", bench.api)
            assert run.first is not None and run.visible is not None and run.pid
            assert 0 < run.since(run.first) <= run.since(run.visible) < 120
            runs[name] = [run]
        with sxs.TreeSampler(bench.agents[sxs.SY]) as sampler:
            pass
        assert sampler.rss_mb > 10 and sampler.cpu_percent >= 0
    assert "pip" in bench.projects   # both installers went to the loopback index
    args = argparse.Namespace(lines=0)
    targets: dict = {}
    table = sxs.report(args, {}, {"pickup": runs, "docker": "skipped: smoke test"}, targets)
    assert "pickup: enqueue → task's first line, p50" in table and "skipped: smoke test" in table
    assert "pickup (p50) ≥10x" in targets
