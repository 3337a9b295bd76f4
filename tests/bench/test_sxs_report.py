"""bench/side_by_side.py's report logic, without running the bench: the floor column (issue 24)
and the rewrite of only the generated blocks of docs/benchmarks.md (pure functions)."""
from __future__ import annotations

import argparse

import pytest

from bench import side_by_side as sxs

FLOORS = {
    "pickup": {"spawn_ms": 30.0, "rtt_ms": 2.0},
    "warm": {"import_s": 1.0},
    "cold": {"build_s": 2.0},
    "logs": {"rate": 400_000.0},
    "abort": {"signal_ms": 10.0, "rtt_ms": 2.0},
    "footprint": {"rss_mb": 25.0},
}


def _runs(agent: str, first: list[float], visible: list[float] | None = None) -> list[sxs.Run]:
    return [sxs.Run(agent, f"t{i}", 100.0, "completed", first=100.0 + f, visible=100.0 + (visible or first)[i],
                    imported=100.0 + f + 1.0) for i, f in enumerate(first)]


def _results() -> dict:
    pickup = {sxs.CML: _runs(sxs.CML, [4.0, 4.0, 4.0]), sxs.SY: _runs(sxs.SY, [0.04, 0.04, 0.04], [0.1, 0.1, 0.1])}
    logs = {name: [{"rate": rate, "lost": 0, "split": 0, "duplicated": 0, "late": 0, "print_s": 0.5}]
            for name, rate in ((sxs.CML, 50_000.0), (sxs.SY, 300_000.0))}
    abort = {name: [{"gone": gone, "stopped": gone + 0.1}] for name, gone in ((sxs.CML, 1.2), (sxs.SY, 0.2))}
    footprint = {sxs.CML: {"idle": (0.3, 51.0)}, sxs.SY: {"idle": (0.2, 40.0)}}
    return {"pickup": pickup, "logs": logs, "abort": abort, "footprint": footprint, "floors": FLOORS}


def _row(table: str, start: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {start}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_each_row_shows_its_floor_and_the_ratio_to_it():
    targets: dict = {}
    floor_targets: dict = {}
    table = sxs.report(argparse.Namespace(lines=200_000), {}, _results(), targets, floor_targets)
    widths = {len(line.strip("|").split("|")) for line in table.splitlines() if line.startswith("|")}
    assert widths == {7}, table   # every row has the floor's two cells
    first = _row(table, "pickup: enqueue → task's first line, p50")
    assert "bare spawn 30 ms + loopback RTT 2.0 ms" in first[4] and first[5].startswith("**1.25x**")
    assert "≤50 ms: **met**" in first[5]
    visible = _row(table, "pickup: enqueue → that line on the server")
    assert visible[5].startswith("**3.33x**") and "≤2x a bare spawn: **missed**" in visible[5]
    logs = _row(table, "log throughput")
    assert "400,000 lines/s" in logs[4] and logs[5].startswith("**1.33x**")   # a rate: floor ÷ figure
    assert "≥350k lines/s: **missed**" in logs[5]
    gone = _row(table, "abort: tasks.stop → task process gone")
    assert gone[5].startswith("**16.67x**") and "≤0.3 s: **met**" in gone[5]
    assert _row(table, "abort: tasks.stop → task `stopped`")[4:6] == ["-", "-"]
    idle = _row(table, "agent footprint idle")
    assert "25 MB" in idle[4] and idle[5].startswith("**1.60x**") and "≤45 MB: **met**" in idle[5]
    assert floor_targets["log throughput: ≥350k lines/s"] == (pytest.approx(4 / 3), False)
    assert targets["pickup (p50) ≥10x"] == (pytest.approx(100.0), True)


def test_rows_without_a_measured_floor_say_so():
    results = _results()
    results["floors"] = {}
    table = sxs.report(argparse.Namespace(lines=200_000), {}, results, {}, floor_targets := {})
    assert _row(table, "pickup: enqueue → task's first line, p50")[4:6] == ["-", "-"]
    assert floor_targets == {}


def test_only_the_generated_blocks_are_rewritten():
    begin, end = sxs._markers("results")
    m_begin, m_end = sxs._markers("method")
    old = (f"{begin}\n# old table\n{end}\n\n## Hand-written (issue 24)\nkept as is\n\n"
           f"{m_begin}\n## How it is measured (old)\n{m_end}\n\n## Slurm (by hand)\nalso kept\n")
    new = sxs.merge_blocks(old, {"results": "# new table\n| a |", "method": "## How it is measured"})
    assert new == (f"{begin}\n# new table\n| a |\n{end}\n\n## Hand-written (issue 24)\nkept as is\n\n"
                   f"{m_begin}\n## How it is measured\n{m_end}\n\n## Slurm (by hand)\nalso kept\n")
    assert sxs.merge_blocks(new, {"results": "# new table\n| a |", "method": "## How it is measured"}) == new


def test_a_new_file_gets_every_block_and_one_without_markers_keeps_its_text(tmp_path):
    out = tmp_path / "benchmarks.md"
    sxs.write_report(out, {"results": "R", "method": "M"})
    text = out.read_text()
    assert text.index("\nR\n") < text.index("\nM\n") and text.endswith(f"{sxs._markers('method')[1]}\n")
    out.write_text("# written by hand\n")
    sxs.write_report(out, {"results": "R"})
    assert out.read_text().startswith("# written by hand\n\n<!-- side_by_side.py results")


def test_a_begin_marker_without_its_end_is_refused():
    begin, _ = sxs._markers("results")
    with pytest.raises(ValueError, match="has no"):
        sxs.merge_blocks(f"{begin}\nhalf a block\n", {"results": "R"})


def test_the_repository_report_has_both_blocks_once():
    text = (sxs.REPO / "docs" / "benchmarks.md").read_text()
    for name in ("results", "method"):
        begin, end = sxs._markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)


def test_venv_floor_builds_and_imports(tmp_path):
    """The cold-build / warm-start floor: a uv venv of a set from a local wheelhouse, then a
    timed bare import in it (with byte code, whatever PYTHONDONTWRITEBYTECODE says)."""
    import os
    from pathlib import Path

    from bench.floors import VenvFloor, compile_s, idle_python_rss_mb
    from sandbox.pyenv import find_uv

    wheels = Path.home() / ".cache" / "shipyard-bench" / "wheelhouse"
    uv = find_uv()
    if uv is None or not list(wheels.glob("idna-*.whl")):
        pytest.skip("no uv or no bench wheelhouse with idna on this machine")
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "cache"), "UV_NO_INDEX": "1", "UV_FIND_LINKS": str(wheels),
           "PYTHONDONTWRITEBYTECODE": "1"}
    floor = VenvFloor(uv, "idna\n", env)
    try:
        assert floor.build_s() > 0 and floor.venv_python is not None and floor.venv_python.exists()
        # the first import of a fresh venv leaves no byte code; it names the sources it loaded
        assert floor.first_import_s("idna") > 0
        sources = floor.imported_sources("idna")
        assert any(src.endswith("idna/__init__.py") for src in sources)
        assert not list((floor.venv_python.parents[1] / "lib").glob("python3*/site-packages/idna/__pycache__"))
        assert compile_s(sources) > 0 and compile_s(sources, 2) > 0
        assert floor.import_s("idna", runs=1) > 0
        assert list((floor.venv_python.parents[1] / "lib").glob("python3*/site-packages/idna/__pycache__/*.pyc"))
    finally:
        floor.close()
    assert 5 < idle_python_rss_mb(settle_s=0.1) < 500


def test_the_installer_cache_warm_row_carries_the_cold_floor_target():
    """The cold-build floor keeps uv's cache warm: its ≤1.2x target is judged on the row that
    keeps the installers' caches too, and only shown next to the everything-empty row."""
    results = {"cold": {sxs.CML: _runs(sxs.CML, [30.0]), sxs.SY: _runs(sxs.SY, [4.0])},
               "coldwarm": {sxs.CML: _runs(sxs.CML, [28.0]), sxs.SY: _runs(sxs.SY, [0.5])},
               "floors": {"cold": {"build_s": 0.4}, "coldwarm": {"build_s": 0.4}}}
    floor_targets: dict = {}
    table = sxs.report(argparse.Namespace(lines=1), {}, results, {}, floor_targets)
    warm_cache = _row(table, "cold build, installer cache warm: enqueue → first line")
    assert warm_cache[5].startswith("**1.25x**; ≤1.2x: **missed**")
    everything_empty = _row(table, "cold build, medium set: enqueue → first line")
    assert "this row empties it" in everything_empty[4] and "met" not in everything_empty[5]
    assert list(floor_targets) == ["cold build, installer cache warm: enqueue → first line: ≤1.2x"]


def test_a_cold_build_with_the_installer_cache_warm_keeps_only_the_download_caches(tmp_path):
    caches = [tmp_path / name for name in ("venvs", "uv-cache", "tasks", "pip-cache", "pip-download-cache")]
    for path in caches:
        path.mkdir()
    agent = sxs.Agent("a", "q", "w", None, tmp_path / "log", caches, lambda: None)  # type: ignore[arg-type]
    agent.wipe_caches(keep_installer=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pip-cache", "pip-download-cache", "uv-cache"]
    agent.wipe_caches()
    assert list(tmp_path.iterdir()) == []
