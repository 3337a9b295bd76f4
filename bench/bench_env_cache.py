"""Cold build vs bare `uv pip install` vs warm materialize, for a medium set of packages.

    python bench/bench_env_cache.py [--packages "numpy pandas scikit-learn requests"] [--repeat 5]

Steps, each in a fresh directory under a temp work dir:

  bare uv, cold uv cache     uv venv + uv pip install, empty UV_CACHE_DIR (downloads everything)
  bare uv, warm uv cache     the same again, packages now in uv's cache
  EnvCache cold build        materialize on an empty env cache (uv cache warm) + compileall
  EnvCache warm materialize  materialize the same requirements again (median of --repeat)
  first import, bare env     `import` of the packages in the bare env (writes .pyc on the fly)
  first import, cached env   the same in a materialized env (bytecode already compiled)

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


def bare_uv_install(uv: Path, packages: list[str], venv: Path, uv_cache: Path) -> None:
    env = {**os.environ, "UV_CACHE_DIR": str(uv_cache), "UV_NO_PROGRESS": "1"}
    subprocess.run([str(uv), "venv", "--quiet", "--seed", "--python", sys.executable, str(venv)], env=env, check=True)
    subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *packages],
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


def run(packages: list[str], repeat: int, work: Path) -> list[tuple[str, float, str]]:
    uv = find_uv()
    if uv is None:
        raise SystemExit("uv not found: pip install uv")
    uv_cache = work / "uv-cache"
    rows: list[tuple[str, float, str]] = []
    rows.append(("bare uv, cold uv cache", timed(lambda: bare_uv_install(uv, packages, work / "bare1", uv_cache)), ""))
    rows.append(("bare uv, warm uv cache", timed(lambda: bare_uv_install(uv, packages, work / "bare2", uv_cache)), ""))
    cache = EnvCache(work / "env-cache", builder=EnvBuilder(uv_cache_dir=uv_cache))
    python = probe(sys.executable)
    requirements = "\n".join(packages)
    cold = cache.materialize(requirements, python, work / "cached0", log=lambda _: None)
    entry_mib = disk_usage(work / "env-cache") >> 20
    rows.append(("EnvCache cold build", cold.seconds, f"entry {entry_mib} MiB, incl. compileall"))
    warm = []
    for i in range(1, repeat + 1):
        result = cache.materialize(requirements, python, work / f"cached{i}", log=lambda _: None)
        assert result.cache_hit
        warm.append(result.seconds)
    rows.append(("EnvCache warm materialize", statistics.median(warm),
                 f"median of {repeat}, min {min(warm):.3f}s; {len(cold.frozen)} packages, "
                 f"{unshared_bytes(work / 'cached1') >> 10} KiB of new file data per target"))
    rows.append(("first import, bare env", first_import(work / "bare2", packages), "compiles .pyc on the fly"))
    rows.append(("first import, cached env", first_import(work / "cached1", packages), "bytecode precompiled"))
    return rows


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
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir, removed afterwards")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-env-cache-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"python {sys.version.split()[0]} on {sys.platform}, {os.cpu_count()} CPUs, packages: {args.packages}")
        print_table(run(args.packages.split(), args.repeat, work))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
