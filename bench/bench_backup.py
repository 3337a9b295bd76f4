"""`shipyard backup` / `restore` on a data dir of a given size: N tasks (the experiment table's
documents, with metrics), F files of S KiB; prints the seconds each takes and the archive's size.

    PYTHONPATH=$PWD python bench/bench_backup.py --tasks 100000 --files 1000 --file-kib 256 [--gz]

The database is written straight into SQLite (bench/tasks_table.py); the backup reads it as
`shipyard backup` does on a running server (no server is needed for the figure).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.tasks_table import seed
from server.backup import backup, restore
from server.storage.store import sqlite_url


def _files(root: Path, count: int, kib: int) -> None:
    for i in range(count):
        path = root / "files" / f"p{i % 10}" / f"task{i}" / "artifact.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(kib * 1024))  # random: artifacts are mostly compressed already


def _timed(label: str, fn) -> float:
    started = time.perf_counter()
    fn()
    took = time.perf_counter() - started
    print(f"{label}: {took:.2f} s")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-kib", type=int, default=256)
    parser.add_argument("--gz", action="store_true", help="write .tar.gz instead of .tar")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        _timed(f"seed {args.tasks} tasks", lambda: seed(data, None, "bench", "bench", args.tasks))
        _files(data, args.files, args.file_kib)
        db_mib = (data / "shipyard.db").stat().st_size / 2**20
        print(f"database {db_mib:.1f} MiB, files {args.files * args.file_kib / 1024:.1f} MiB")
        archive = Path(tmp) / ("b.tar.gz" if args.gz else "b.tar")
        _timed("backup", lambda: backup(data, sqlite_url(data), archive))
        print(f"archive {archive.stat().st_size / 2**20:.1f} MiB")
        _timed("restore", lambda: restore(archive, Path(tmp) / "restored"))


if __name__ == "__main__":
    main()
