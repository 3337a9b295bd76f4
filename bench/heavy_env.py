"""A heavy environment side by side: torch (CPU) + numpy + pandas, clearml-agent and `shipyard daemon`.

    python bench/bench_env_cache.py --heavy [--warm-runs 5] [--cold-runs 2] [--keep]

Uses bench/side_by_side.py's harness: one server, one loopback index serving a wheelhouse of
its own (`~/.cache/shipyard-bench/wheelhouse-heavy`: torch==2.13.0, the CPU build, found through
pip's configuration, and numpy, pandas and their dependencies), both daemons at once. The task
imports torch, numpy and pandas, then prints its first line; then it times a bare
`python -c "import torch"` in its own venv (the floor no agent can beat) and prints that too.

  warm-up          once per agent with every cache empty (fills uv's / pip's download caches)
  cold, installer cache warm   the agents' environment caches wiped (Shipyard: env cache and task
                   dirs; clearml-agent: venvs dir and venvs cache), uv's / pip's caches kept
  warm start       environment cached: enqueue -> the task's first line (imports done)
  floors           after the cold builds (the same uv cache, the same index; PYTHONDONTWRITEBYTECODE,
                   which some shells set and the daemons pass on, is dropped where byte code
                   should be written, set where none should be): `uv venv` + `uv pip install` of
                   the set into a fresh venv; the first `import torch, numpy, pandas` in it (no
                   byte code yet: what a cold build's first run pays at least); byte-compiling just
                   the modules that import loads, serially and on every CPU; and, after the warm
                   starts, the same import with its byte code written (the warm-start floor)

torch resolution: clearml-agent gets pytorch_resolve=none (its pip mode would ask
download.pytorch.org, which nothing here can reach); Shipyard keeps its default `pip` mode with
the loopback index as its `cpu` entry, so its resolver runs and picks the cpu index.
"""
from __future__ import annotations

import json
import re
import statistics

from bench import side_by_side as sxs
from bench.floors import VenvFloor, compile_s, cpus
from bench.pypi_mirror import ensure_wheelhouse, wheelhouse_dir
from tests import peers

HEAVY = "torch==2.13.0\nnumpy\npandas\n"
MODULES = "torch, numpy, pandas"
WHEELHOUSE = ["torch==2.13.0", "numpy", "pandas", "pip", "pip<22.3", "setuptools", "wheel"]
TASK = """\
import os, subprocess, sys, time
started = time.perf_counter()
import torch, numpy, pandas
imports = time.perf_counter() - started
print(f"SXS-FIRST {time.time():.6f} {os.getpid()}", flush=True)
print(f"SXS-HEAVY imports {imports:.3f} torch {torch.__version__}", flush=True)
for what in ("pass", "import torch", "import torch, numpy, pandas"):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", what], check=True)
    print(f"SXS-FLOOR {what!r} {time.perf_counter() - t0:.3f}", flush=True)
"""
_FLOOR = re.compile(r"SXS-FLOOR '([^']+)' (\d+\.\d+)")
_IMPORTS = re.compile(r"SXS-HEAVY imports (\d+\.\d+) torch (\S+)")
_READY = re.compile(r"environment ready in (\d+\.\d+)s")


def run(warm_runs: int, cold_runs: int, keep: bool, shipyard_only: bool = False) -> str:
    agent_bin = peers.ensure("agent", log=sxs.log)
    wheels = ensure_wheelhouse(WHEELHOUSE, dest=wheelhouse_dir().with_name("wheelhouse-heavy"), log=sxs.log)
    bench = sxs.Bench(wheels, agent_bin, keep=keep)
    bench.env_extra = {"CLEARML_AGENT_PACKAGE_PYTORCH_RESOLVE": "none", "SHIPYARD_PYTORCH_RESOLVE": "pip",
                       "SHIPYARD_TORCH_INDEXES": json.dumps({"cpu": bench.mirror.url})}
    with bench:
        api, agents = bench.api, bench.agents
        if shipyard_only:   # clearml-agent's warm start alone takes minutes; its figures are in docs/benchmarks.md
            agents = {sxs.SY: agents[sxs.SY]}
        warmup = sxs.alternate(1, agents, lambda agent, i: _one(api, agent, "warmup", i))
        cold = sxs.alternate(cold_runs, agents, lambda agent, i: _one(api, agent, "cold", i, wipe=True))
        venv = sxs.floor_venv(bench, HEAVY)
        try:
            floors = _cold_floors(venv, cold_runs)
            warm = sxs.alternate(warm_runs, agents, lambda agent, i: _one(api, agent, "warm", i))
            floors["import_s"] = venv.import_s(MODULES)
        finally:
            venv.close()
        sxs.log(f"  heavy floors: {floors}")
    return _report(warmup, cold, warm) + "\n" + _floor_report(floors, cold[sxs.SY], warm[sxs.SY])


def _cold_floors(venv: VenvFloor, runs: int) -> dict:
    """The cold build's floors, in the same run (the module docstring's "floors")."""
    floors: dict = {"build_s": statistics.median(venv.build_s() for _ in range(max(1, runs)))}
    floors["first_import_s"] = venv.first_import_s(MODULES)
    sources = venv.imported_sources(MODULES)
    floors["sources"] = len(sources)
    floors["compile_serial_s"] = compile_s(sources)
    floors["workers"] = cpus()
    floors["compile_parallel_s"] = compile_s(sources, floors["workers"])
    return floors


def _one(api: sxs.Api, agent: sxs.Agent, label: str, i: int, *, wipe: bool = False) -> dict:
    if wipe:   # the environment caches only: uv's / pip's download caches stay warm
        agent.wipe_caches(keep_installer=True)
    run = sxs.check(sxs.run_task(api, agent, f"heavy-{label}-{i}", TASK, HEAVY, timeout=900, jitter=True),
                    f"heavy {label}", api)
    text = "\n".join(sxs.task_log(api, run.task))
    found = {"first": run.since(run.first), "stages": sxs.agent_stages(api, run),
             "floors": {m.group(1): float(m.group(2)) for m in _FLOOR.finditer(text)}}
    if (m := _IMPORTS.search(text)) is not None:
        found["imports"], found["torch"] = float(m.group(1)), m.group(2)
    if (m := _READY.search(text)) is not None:
        found["env_ready"] = float(m.group(1))
    found["bytecode_s"] = sxs.wait_bytecode(agent, timeout=900)
    sxs.log(f"  heavy {label} {agent.name}: first line {found['first']:.2f}s; {found['stages']}; "
            f"imports {found.get('imports')}, floors {found['floors']}")
    return found


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} s (n=1)"
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f}, n={len(values)})"


def _report(warmup: dict, cold: dict, warm: dict) -> str:
    cml, sy = sxs.CML, sxs.SY

    def firsts(runs: dict, name: str) -> list[float]:
        return [r["first"] for r in runs.get(name, [])]

    rows = [("heavy env, every cache empty: enqueue → first line (imports done)", firsts(warmup, cml), firsts(warmup, sy)),
            ("heavy env, cold build, installer cache warm: enqueue → first line", firsts(cold, cml), firsts(cold, sy)),
            ("heavy env, warm start: enqueue → first line (imports done)", firsts(warm, cml), firsts(warm, sy))]
    lines = ["| measure | clearml-agent | shipyard | ratio |", "|---|---|---|---|"]
    for name, a, b in rows:
        ratio = f"**{statistics.median(a) / statistics.median(b):.1f}x**" if a and b else "-"
        lines.append(f"| {name} | {_fmt(a)} | {_fmt(b)} | {ratio} |")
    warm_sy = warm[sy]
    p50 = {name: f"{sxs.pctl(firsts(warm, name), 0.5):.2f} s" if firsts(warm, name) else "-" for name in (cml, sy)}
    lines.append(f"| heavy env, warm start p50 (nearest rank) | {p50[cml]} | {p50[sy]} | |")
    detail = [f"- shipyard warm start, environment ready (materialize, cache hit): "
              f"{_fmt([r['env_ready'] for r in warm_sy if 'env_ready' in r])}",
              f"- in-task `import torch, numpy, pandas`: shipyard {_fmt([r['imports'] for r in warm_sy if 'imports' in r])}, "
              f"clearml-agent {_fmt([r['imports'] for r in warm.get(cml, []) if 'imports' in r])}"]
    for what in ("pass", "import torch", "import torch, numpy, pandas"):
        detail.append(f"- floor, bare `python -c \"{what}\"` in the task's venv: shipyard "
                      f"{_fmt([r['floors'][what] for r in warm_sy if what in r['floors']])}, clearml-agent "
                      f"{_fmt([r['floors'][what] for r in warm.get(cml, []) if what in r['floors']])}")
    detail.append(f"- shipyard warm stages (since enqueue), last run: {warm_sy[-1]['stages']}")
    last_cml = warm[cml][-1] if warm.get(cml) else {}
    detail.append(f"- clearml-agent warm stages (since enqueue), last run: {last_cml.get('stages')}")
    detail.append(f"- torch installed: shipyard {warm_sy[-1].get('torch')}, clearml-agent {last_cml.get('torch')}")
    return "\n".join(lines + [""] + detail)


def main(warm_runs: int, cold_runs: int, keep: bool, shipyard_only: bool = False) -> None:
    print(run(warm_runs, cold_runs, keep, shipyard_only))


if __name__ == "__main__":
    main(5, 2, False)


def _floor_report(fl: dict, cold: list[dict], warm: list[dict]) -> str:
    """Shipyard's cold and warm figures against the floors measured in the same run."""
    def med(runs: list[dict], name: str) -> float | None:
        values = [r[name] for r in runs if name in r]
        return statistics.median(values) if values else None

    cold_floor = fl["build_s"] + fl["first_import_s"]
    rows = [("cold build → environment ready", med(cold, "env_ready"), fl["build_s"],
             "`uv venv` + `uv pip install` of the set, fresh venv, warm uv cache"),
            ("cold build → first line (imports done)", med(cold, "first"), cold_floor,
             "that + the first `import torch, numpy, pandas` in it, no byte code yet"),
            ("cold build: the task's imports", med(cold, "imports"), fl["first_import_s"],
             "the first import in the bare venv, no byte code yet"),
            ("warm start → first line (imports done)", med(warm, "first"), fl["import_s"],
             "bare `import torch, numpy, pandas`, byte code written")]
    lines = ["", "| shipyard, heavy env | figure (median) | floor (same run) | what the floor is | ÷ floor |",
             "|---|---|---|---|---|"]
    for name, figure, floor, what in rows:
        ratio = f"**{figure / floor:.2f}x**" if figure and floor else "-"
        shown = f"{figure:.2f} s" if figure is not None else "-"
        lines.append(f"| {name} | {shown} | {floor:.2f} s | {what} | {ratio} |")
    lines.append(f"\nThe first import loads {fl['sources']} .py files of site-packages; byte-compiling just "
                 f"those takes {fl['compile_serial_s']:.2f} s serially, {fl['compile_parallel_s']:.2f} s on "
                 f"{fl['workers']} processes (the first import without byte code costs "
                 f"{fl['first_import_s'] - fl['import_s']:.2f} s over one with it).")
    return "\n".join(lines)
