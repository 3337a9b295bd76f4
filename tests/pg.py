"""A private PostgreSQL server for tests: initdb in a temp dir, on a free loopback port.

Uses the machine's PostgreSQL binaries (Debian's postgresql package; `.ci/run` installs it).
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def tool(name: str) -> str:
    """The path of one of PostgreSQL's client programs (psql, pg_dump, pg_restore)."""
    return _bin(name) or name


def available() -> bool:
    return bool(_bin("initdb") and _bin("pg_ctl"))


class PgServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="shipyard-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.root / "data"), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c max_connections=300", "start")

    def cpu_s(self) -> float:
        """CPU seconds the server has used: the postmaster's own and its reaped children's, and
        the live children's (backends, WAL writer...), from /proc (benchmarks read it twice)."""
        pid = int((self.root / "data" / "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            own = stat == f"/proc/{pid}/stat"
            if own or int(fields[1]) == pid:
                total += sum(int(f) for f in fields[11:15 if own else 13]) / tick
        return total

    def halt(self) -> None:
        """Stop the server (fast: sessions are ended, in-flight transactions rolled back); start() again."""
        self._run(_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def _run(self, *argv: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self.as_root else list(argv)
        subprocess.run(cmd, check=True, capture_output=True, cwd=str(self.root))

    def new_database(self, name: str) -> str:
        for _ in range(50):
            proc = subprocess.run([_bin("psql") or "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                   "-c", f"CREATE DATABASE {name}"], capture_output=True, text=True)
            if proc.returncode == 0:
                return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"
            time.sleep(0.1)
        raise RuntimeError(proc.stderr)

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
