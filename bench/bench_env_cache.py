"""Cold build vs bare `uv pip install` vs warm materialize, for a medium set of packages.

    python bench/bench_env_cache.py [--packages "numpy pandas scikit-learn requests"] [--repeat 5] [--rounds 3]
    python bench/bench_env_cache.py --heavy [--warm-runs 5] [--cold-runs 2] [--keep]

--heavy: torch (CPU) + numpy + pandas through both daemons, clearml-agent's and Shipyard's, in
one run: warm start and cold build with the installer's cache warm (bench/heavy_env.py).

Steps, each in a fresh directory under a temp work dir:

  bare uv, cold uv cache         uv venv + uv pip install, empty UV_CACHE_DIR (downloads everything)
  bare uv, warm uv cache         the same again, packages now in uv's cache (median of --rounds,
                                 interleaved with the background cold builds below)
  bare uv --compile-bytecode     the same with uv compiling bytecode itself (the alternative)
  EnvCache cold build, sync      materialize on an empty env cache, compileall before publishing
  EnvCache cold build            materialize on an empty env cache (uv cache warm), bytecode
                                 compiled afterwards in the background (median of --rounds)
  materialize while compiling    a second target of that entry while its compiler runs
  bytecode complete after        from the cold build's start until BYTECODE-COMPLETE (median)
  EnvCache warm materialize      materialize again once bytecode is complete, as the daemon does
                                 run after run: hand-over, the imports, the run's end (median of --repeat)
  run end: entry verified        closing the run's lease: the full check of the entry that lets
                                 the next hand-over skip it (off the pickup path)
  warm materialize, run alive    a hand-over while another run of the agent's user is alive
                                 (its task could be writing the cache): checked in full
  first import, bare env         `import` of the packages in the bare env (compiles on the fly)
  import, bare env (floor)       the same in the bare --compile-bytecode venv: the floor, measured
                                 run by run next to the next one (PYTHONDONTWRITEBYTECODE may be set)
  first import, cached env       the first import in a materialized env (bytecode precompiled)
  warm start, cached env         warm materialize + that import, as a ratio to the floor

Needs network access to the package index for the cold step. Not run by the tests.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.env_cache import EnvCache  # noqa: E402
from sandbox.pyenv import EnvBuilder, find_uv, probe  # noqa: E402

DEFAULT_PACKAGES = "numpy pandas scikit-learn requests"
IMPORT_NAMES = {"scikit-learn": "sklearn", "pillow": "PIL"}


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bare_uv_install(uv: Path, packages: list[str], venv: Path, uv_cache: Path, *extra: str) -> None:
    env = {**os.environ, "UV_CACHE_DIR": str(uv_cache), "UV_NO_PROGRESS": "1"}
    subprocess.run([str(uv), "venv", "--quiet", "--seed", "--python", sys.executable, str(venv)], env=env, check=True)
    subprocess.run([str(uv), "pip", "install", "--quiet", *extra, "--python", str(venv / "bin" / "python"), *packages],
                   env=env, check=True)


def first_import(venv: Path, packages: list[str]) -> float:
    modules = ", ".join(IMPORT_NAMES.get(p, p.replace("-", "_")) for p in packages)
    return timed(lambda: subprocess.run([str(venv / "bin" / "python"), "-c", f"import {modules}"], check=True))


def disk_usage(path: Path) -> int:
    seen: set[int] = set()
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def run(packages: list[str], repeat: int, rounds: int, work: Path) -> list[tuple[str, float, str]]:
    uv = find_uv()
    if uv is None:
        raise SystemExit("uv not found: pip install uv")
    uv_cache = work / "uv-cache"
    python = probe(sys.executable)
    requirements = "\n".join(packages)
    builder = EnvBuilder(uv_cache_dir=uv_cache)
    rows: list[tuple[str, float, str]] = []
    rows.append(("bare uv, cold uv cache", timed(lambda: bare_uv_install(uv, packages, work / "bare0", uv_cache)), ""))
    sync = EnvCache(work / "env-cache-sync", builder=builder, compile_bytecode="sync")
    sync_cold = sync.materialize(requirements, python, work / "sync0", log=lambda _: None)
    compiled = timed(lambda: bare_uv_install(uv, packages, work / "bare-compiled", uv_cache, "--compile-bytecode"))
    bare, cold, ready = [], [], []
    during = caches = None
    for i in range(1, rounds + 1):  # interleaved, so load changes hit both alike
        bare.append(timed(lambda venv=work / f"bare{i}": bare_uv_install(uv, packages, venv, uv_cache)))
        caches = EnvCache(work / f"env-cache{i}", builder=builder)
        started = time.monotonic()
        result = caches.materialize(requirements, python, work / f"cold{i}", log=lambda _: None)
        cold.append(result.seconds)
        if during is None:
            during = caches.materialize(requirements, python, work / "during", log=lambda _: None)
            assert during.cache_hit
            close(during)
        if not caches.wait_for_bytecode(result.key, timeout=3600):
            raise SystemExit("the background bytecode compiler did not finish")
        ready.append(time.monotonic() - started)
        close(result)
    bare_warm = statistics.median(bare)
    rows.append(("bare uv, warm uv cache", bare_warm, spread(bare)))
    rows.append(("bare uv --compile-bytecode, warm", compiled, f"{compiled / bare_warm:.2f}x bare; uv compiles"))
    rows.append(("EnvCache cold build, sync", sync_cold.seconds,
                 f"{sync_cold.seconds / bare_warm:.2f}x bare; compileall before publishing (the old way)"))
    rows.append(("EnvCache cold build", statistics.median(cold),
                 f"{statistics.median(cold) / bare_warm:.2f}x bare; {spread(cold)}; bytecode in the background"))
    rows.append(("materialize while compiling", during.seconds, "niced compiler running on the entry"))
    rows.append(("bytecode complete after", statistics.median(ready), f"{spread(ready)}; from the cold build's start"))
    entry_mib = disk_usage(caches.root) >> 20
    first_bare = first_import(work / "bare1", packages)
    warm, imports, ends, floors = [], [], [], []
    for i in range(1, repeat + 1):   # as the daemon: hand-over, the task's imports, the run's end
        result = caches.materialize(requirements, python, work / f"cached{i}", log=lambda _: None)
        assert result.cache_hit
        warm.append(result.seconds)
        imports.append(first_import(work / f"cached{i}", packages))
        floors.append(first_import(work / "bare-compiled", packages))   # interleaved: load hits both alike
        ends.append(close(result))
    rows.append(("EnvCache warm materialize", statistics.median(warm),
                 (f"median of {repeat}, min {min(warm):.3f}s; {len(result.frozen)} packages, entry {entry_mib} MiB, "
                  f"{unshared_bytes(work / 'cached1') >> 10} KiB of new file data per target")))
    rows.append(("run end: entry verified", statistics.median(ends), "closing the lease; off the pickup path"))
    alive = caches.materialize(requirements, python, work / "alive", log=lambda _: None)
    checked = caches.materialize(requirements, python, work / "checked", log=lambda _: None)
    rows.append(("warm materialize, run alive", checked.seconds, "another run of the agent's user alive: full check"))
    close(checked)
    close(alive)
    floor = statistics.median(floors)
    rows.append(("first import, bare env", first_bare, "compiles .pyc on the fly"))
    rows.append(("import, bare env (floor)", floor, f"the --compile-bytecode venv (.pyc present), {spread(floors)}"))
    cached = statistics.median(imports)
    rows.append(("first import, cached env", cached, f"{spread(imports)}; {cached / floor:.2f}x the floor"))
    ratios = [(w + i) / f for w, i, f in zip(warm, imports, floors, strict=True)]
    start = statistics.median(w + i for w, i in zip(warm, imports, strict=True))
    rows.append(("warm start, cached env", start, f"materialize + import; per run {statistics.median(ratios):.2f}x "
                 f"the floor measured next to it (median; {min(ratios):.2f}-{max(ratios):.2f})"))
    return rows


def close(result) -> float:  # noqa: ANN001
    """End a run: close its lease (the entry is verified when its task could write it)."""
    return timed(result.lease.close) if result.lease is not None else 0.0


def spread(samples: list[float]) -> str:
    if len(samples) == 1:
        return "1 run"
    return f"median of {len(samples)}, {min(samples):.3f}-{max(samples):.3f}s"


def unshared_bytes(path: Path) -> int:
    """Bytes in files that are not hard links (the rewritten bin/ scripts and pyvenv.cfg)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink == 1 and not os.path.islink(os.path.join(dirpath, name)):
                total += st.st_size
    return total


def print_table(rows: list[tuple[str, float, str]]) -> None:
    width = max(len(name) for name, _, _ in rows)
    print(f"{'step':<{width}}  {'seconds':>8}  notes")
    print(f"{'-' * width}  {'-' * 8}  -----")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:>8.3f}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", default=DEFAULT_PACKAGES)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="bare warm installs and cold builds, interleaved")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir, removed afterwards")
    parser.add_argument("--heavy", action="store_true", help="torch+numpy+pandas, clearml-agent and shipyard daemon")
    parser.add_argument("--warm-runs", type=int, default=5, help="--heavy: warm starts per agent")
    parser.add_argument("--cold-runs", type=int, default=2, help="--heavy: cold builds per agent")
    parser.add_argument("--keep", action="store_true", help="--heavy: keep the work dir")
    parser.add_argument("--shipyard-only", action="store_true", help="--heavy: measure Shipyard's daemon alone")
    args = parser.parse_args()
    if args.heavy:
        from bench import heavy_env

        heavy_env.main(args.warm_runs, args.cold_runs, args.keep, args.shipyard_only)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-env-cache-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs, packages: {args.packages}")
        print_table(run(args.packages.split(), args.repeat, args.rounds, work))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
