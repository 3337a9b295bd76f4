"""Where an EnvCache cold build with uv's cache warm goes, stage by stage, next to its floor.

    PYTHONPATH=$PWD python3 bench/profile_cold_build.py [--wheelhouse DIR] [--packages "numpy pandas"] [--rounds 5] [--seed-ab]

Offline: uv resolves from a wheelhouse directory (`--find-links`, no index; default the
side-by-side bench's, ~/.cache/shipyard-bench/wheelhouse). One untimed bare install fills a uv
cache of its own; then, round after round (interleaved, so load changes hit both alike):

  floor      `uv venv` + `uv pip install` of the packages into a fresh venv (that warm cache)
  EnvCache   materialize on an empty env cache (compile_bytecode="off": the background compiler
             would only load the machine), its stages timed by wrapping them: each installer
             command (uv venv, uv pip install, uv pip freeze), what is left of pip's seed once
             the install is done (sandbox/seed.py: it runs beside the install), sealing + stamping, the
             manifest write, markers, publish, the hand-over's check, the overlay venv, prune
  no seed    with --seed-ab, the same build with EnvBuilder(seed_pip=False) in each round too
             (`uv venv` without pip/setuptools/wheel): what seeding pip costs (its stages are
             not counted in the table)

Prints the medians, the ratio to the floor and the load average. Not run by the tests.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sandbox.cache_build as cache_build  # noqa: E402
import sandbox.env_cache as env_cache  # noqa: E402
import sandbox.seed as seed  # noqa: E402
from sandbox.cache_build import EntryBuilds  # noqa: E402
from sandbox.env_cache import EnvCache  # noqa: E402
from sandbox.pyenv import EnvBuilder, find_uv, probe  # noqa: E402

STAGES: list[tuple[object, str, str]] = [
    (EnvBuilder, "_run", ""), (seed, "finish_seed", "pip seed: wait + merge (it runs beside the install)"),
    (cache_build.manifest, "seal", "seal + stamp (one walk)"),
    (cache_build.manifest, "save", "manifest write"), (cache_build, "write_marker", "markers"),
    (EntryBuilds, "publish", "publish (rename)"), (EnvCache, "_ensure_verified", "hand-over check"),
    (env_cache, "make_overlay", "overlay venv"), (EnvCache, "prune", "prune"),
    (EntryBuilds, "build_entry", "build, total"),
]


def instrument(times: dict[str, list[float]]) -> None:
    """Wrap each stage so its seconds land in `times` (installer commands by their first words)."""
    for owner, name, label in STAGES:
        original = getattr(owner, name)

        def timed(*args, _original: Callable = original, _name: str = name, _label: str = label, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                what = _label or " ".join(Path(str(a)).name for a in args[1][:3])
                times[what].append(time.perf_counter() - started)

        setattr(owner, name, functools.wraps(original)(timed))


def bare(uv: Path, packages: list[str], venv: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], env=env, check=True)
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), *packages],
                   env=env, check=True)
    return time.perf_counter() - started


def run(wheelhouse: Path, packages: list[str], rounds: int, work: Path, seed_ab: bool = False) -> str:
    uv = find_uv()
    if uv is None:
        raise SystemExit("uv not found")
    os.environ.update({"UV_FIND_LINKS": str(wheelhouse), "UV_NO_INDEX": "1", "UV_NO_CONFIG": "1"})
    env = {**os.environ, "UV_CACHE_DIR": str(work / "uv-cache"), "UV_NO_PROGRESS": "1"}
    builder = EnvBuilder(uv_cache_dir=work / "uv-cache")
    python = probe(sys.executable)
    times: dict[str, list[float]] = defaultdict(list)
    bare(uv, packages, work / "fill", env)
    instrument(times)
    floors, colds, unseeded = [], [], []
    unseeded_builder = EnvBuilder(uv_cache_dir=work / "uv-cache", seed_pip=False)
    for i in range(rounds):
        floors.append(bare(uv, packages, work / f"bare{i}", env))
        colds.append(_cold(EnvCache(work / f"cache{i}", 50 << 30, builder=builder, compile_bytecode="off"),
                           packages, python, work / f"run{i}"))
        if seed_ab:
            counted = {name: len(values) for name, values in times.items()}
            unseeded.append(_cold(EnvCache(work / f"unseeded{i}", 50 << 30, builder=unseeded_builder,
                                           compile_bytecode="off"), packages, python, work / f"unseeded-run{i}"))
            for name, values in times.items():
                del values[counted.get(name, 0):]
    floor, cold = statistics.median(floors), statistics.median(colds)
    lines = [f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; {len(packages)} packages, {rounds} rounds",
             f"floor, `uv venv` + `uv pip install`, warm uv cache: {floor:.3f} s (median; {min(floors):.3f}–{max(floors):.3f})",
             f"EnvCache cold build, uv cache warm: {cold:.3f} s (median; {min(colds):.3f}–{max(colds):.3f}) "
             f"= {cold / floor:.2f}x the floor",
             "stages (medians):"]
    if unseeded:
        lines.insert(3, f"the same without seeding pip (seed_pip=False): {statistics.median(unseeded):.3f} s (median; "
                        f"{min(unseeded):.3f}–{max(unseeded):.3f})")
    lines += [f"  {name:32s} {statistics.median(values):.3f} s" for name, values in times.items()]
    return "\n".join(lines)


def _cold(cache: EnvCache, packages: list[str], python, target: Path) -> float:
    result = cache.materialize("\n".join(packages), python, target, log=lambda _line: None)
    if result.lease is not None:
        result.lease.close()
    return result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheelhouse", type=Path, default=Path.home() / ".cache" / "shipyard-bench" / "wheelhouse")
    parser.add_argument("--packages", default="numpy pandas scikit-learn requests")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed-ab", action="store_true", help="also build without seeding pip, each round")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shipyard-profile-cold-"))
    try:
        print(run(args.wheelhouse, args.packages.split(), args.rounds, work, args.seed_ab))
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
