"""Files listener throughput on each storage backend: one large upload, whole and ranged downloads,
and the server's peak RSS growth during them.

    python bench/bench_files.py [--mib 256] [--backend local|s3|both] [--runs 3]

Starts its own server (and, for s3, a moto server: in-memory, on loopback, so the figures are
the listener's and boto3's cost, not a real network's) in a temp dir. Median MiB/s of `--runs`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import start_server  # noqa: E402
from tests.s3_helpers import make_bucket, s3_client, server_env, start_moto  # noqa: E402

MIB = 1 << 20
BOUNDARY = "bEnChBoUnDaRy"


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def upload(files_url: str, token: str, name: str, mib: int) -> float:
    block = bytes(range(256)) * 4096

    def body():
        yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(mib):
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    started = time.perf_counter()
    resp = requests.post(f"{files_url}/", data=body(), timeout=600, headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    resp.raise_for_status()
    return time.perf_counter() - started


def download(url: str, token: str, headers: dict | None = None) -> tuple[float, int]:
    started = time.perf_counter()
    got = 0
    with requests.get(url, headers={"Authorization": f"Bearer {token}", **(headers or {})}, stream=True,
                      timeout=600) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(MIB):
            got += len(chunk)
    return time.perf_counter() - started, got


def bench(backend: str, mib: int, runs: int, root: Path) -> dict[str, float]:
    moto = start_moto(root) if backend == "s3" else None
    env = server_env(moto.url, make_bucket(moto.url)) if moto else {}
    server = start_server(root / f"srv-{backend}", env=env)
    try:
        token = server.api().token
        before = peak_rss(server.proc.pid)
        ups, downs, ranges = [], [], []
        for run in range(runs):
            name = f"bench/{run}.bin"
            ups.append(mib / upload(server.files_url, token, name, mib))
            seconds, got = download(f"{server.files_url}/{name}", token)
            assert got == mib * MIB
            downs.append(mib / seconds)
            started = time.perf_counter()
            for i in range(20):
                _, got = download(f"{server.files_url}/{name}", token, {"Range": f"bytes={i * MIB}-{i * MIB + 65535}"})
                assert got == 65536
            ranges.append((time.perf_counter() - started) / 20 * 1000)
        direct = _direct_range_ms(moto.url, env["SHIPYARD_FILES_S3_BUCKET"], "files/bench/0.bin") if moto else 0.0
        return {"upload_mib_s": statistics.median(ups), "download_mib_s": statistics.median(downs),
                "range_64k_ms": statistics.median(ranges), "direct_range_64k_ms": direct,
                "peak_rss_growth_mib": (peak_rss(server.proc.pid) - before) / MIB}
    finally:
        server.stop()
        if moto:
            moto.stop()


def _direct_range_ms(url: str, bucket: str, key: str) -> float:
    """The same 64 KiB range read straight from the store with boto3: what the store itself costs."""
    client = s3_client(url)
    started = time.perf_counter()
    for i in range(20):
        client.get_object(Bucket=bucket, Key=key, Range=f"bytes={i * MIB}-{i * MIB + 65535}")["Body"].read()
    return (time.perf_counter() - started) / 20 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--backend", choices=("local", "s3", "both"), default="both")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    backends = ("local", "s3") if args.backend == "both" else (args.backend,)
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp:
        for backend in backends:
            figures = bench(backend, args.mib, args.runs, Path(tmp))
            print(f"{backend:5s} {args.mib} MiB: upload {figures['upload_mib_s']:.0f} MiB/s, "
                  f"download {figures['download_mib_s']:.0f} MiB/s, 64 KiB range {figures['range_64k_ms']:.1f} ms, "
                  f"server peak RSS +{figures['peak_rss_growth_mib']:.0f} MiB"
                  + (f" (boto3 straight to the store: 64 KiB range {figures['direct_range_64k_ms']:.1f} ms)"
                     if backend == "s3" else ""), flush=True)


if __name__ == "__main__":
    main()
