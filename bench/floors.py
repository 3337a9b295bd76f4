"""Floors the benches measure next to their figures (issue 24): what this machine allows for a
job, done bare, in the same run. The other floors live with the bench that introduced them and
are imported from there: the spawn and the loopback round trip (bench_pickup), the signal
(bench_abort), the chatty task's pipe read in large chunks (bench_logs).

    idle_python_rss_mb   RSS of a bare Python that imported requests and waits
    VenvFloor            `uv venv` + `uv pip install` of a set into a fresh venv from a warm
                         cache (the cold-build floor), then a bare import of the set in that venv
                         (the warm-start floor); the first import, before any byte code exists
                         (what a cold build's first run pays), and what compiling just the
                         modules that import loads costs, serially and in parallel
"""
from __future__ import annotations

import json
import os
import py_compile
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil

__all__ = ["VenvFloor", "compile_s", "cpus", "idle_python_rss_mb"]


def idle_python_rss_mb(python: str = sys.executable, settle_s: float = 0.5) -> float:
    """MB resident of `python -c "import requests"` waiting: what an idle agent cannot go below."""
    child = subprocess.Popen([python, "-c", "import sys, time, requests\nprint(flush=True)\ntime.sleep(120)"],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        child.stdout.readline()   # imported
        time.sleep(settle_s)
        return psutil.Process(child.pid).memory_info().rss / 2**20
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


class VenvFloor:
    """A fresh venv of `requirements` built with uv from the cache and index `env` names."""

    def __init__(self, uv: Path, requirements: str, env: dict[str, str], python: str = sys.executable):
        self.uv, self.requirements, self.env, self.python = uv, requirements, env, python
        self._dir = Path(tempfile.mkdtemp(prefix="shipyard-floor-venv-"))
        self.venv_python: Path | None = None

    def build_s(self) -> float:
        """Seconds for `uv venv` + `uv pip install -r` into a new venv (each call a new one)."""
        venv = self._dir / f"venv-{len(list(self._dir.iterdir()))}"
        reqs = self._dir / "requirements.txt"
        reqs.write_text(self.requirements)
        started = time.perf_counter()
        self._uv("venv", "--python", self.python, str(venv))
        self._uv("pip", "install", "--python", str(venv / "bin" / "python"), "-r", str(reqs))
        elapsed = time.perf_counter() - started
        self.venv_python = venv / "bin" / "python"
        return elapsed

    def import_s(self, modules: str, runs: int = 3) -> float:
        """Median seconds of a bare `python -c "import <modules>"` in the built venv (after one
        untimed import that writes the byte code, as a warm environment has it)."""
        if self.venv_python is None:
            self.build_s()
        assert self.venv_python is not None
        argv = [str(self.venv_python), "-c", f"import {modules}"]
        # PYTHONDONTWRITEBYTECODE (set on some machines) would leave every timed import compiling
        # from source, where a warm environment (Shipyard compiles its cache entries) has .pyc files
        env = {k: v for k, v in self.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(argv, check=True, env=env)
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(argv, check=True, env=env)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    def first_import_s(self, modules: str) -> float:
        """Seconds of `python -c "import <modules>"` in a venv just built (no byte code yet: uv
        writes none), leaving none behind: what the first run of a cold build pays."""
        python = self._fresh()
        env = {**self.env, "PYTHONDONTWRITEBYTECODE": "1"}
        started = time.perf_counter()
        subprocess.run([str(python), "-c", f"import {modules}"], check=True, env=env)
        return time.perf_counter() - started

    def imported_sources(self, modules: str) -> list[str]:
        """The .py files of the venv's site-packages that `import <modules>` loads."""
        python = self._fresh()
        code = (f"import json, sys, sysconfig\nimport {modules}\nsite = sysconfig.get_paths()['purelib']\n"
                "print(json.dumps(sorted({f for m in list(sys.modules.values()) "
                "if (f := getattr(m, '__file__', None)) and f.endswith('.py') and f.startswith(site)})))")
        env = {**self.env, "PYTHONDONTWRITEBYTECODE": "1"}
        out = subprocess.run([str(python), "-c", code], check=True, env=env, capture_output=True, text=True).stdout
        return list(json.loads(out))

    def _fresh(self) -> Path:
        if self.venv_python is None:
            self.build_s()
        assert self.venv_python is not None
        return self.venv_python

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def _uv(self, *args: str) -> None:
        proc = subprocess.run([str(self.uv), *args], env=self.env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"uv {' '.join(args[:2])} failed: {proc.stderr.strip()[-500:]}")


def compile_s(sources: list[str], workers: int = 1) -> float:
    """Seconds to byte-compile `sources` (into a scratch directory, the venv stays as it is) with
    `workers` processes: the cost of writing the byte code of just what an import loads."""
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-floor-pyc-"))
    jobs = [(src, str(scratch / f"{i}.pyc")) for i, src in enumerate(sources)]
    try:
        started = time.perf_counter()
        if workers <= 1:
            for src, dest in jobs:
                py_compile.compile(src, cfile=dest, doraise=True)
        else:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_compile_one, jobs, chunksize=max(1, len(jobs) // (workers * 8))))
        return time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _compile_one(job: tuple[str, str]) -> None:
    py_compile.compile(job[0], cfile=job[1], doraise=True)


def cpus() -> int:
    return len(os.sched_getaffinity(0))
