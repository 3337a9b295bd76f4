"""The environment cache's limits (entries, free space) that never evict an entry in use, and
the shared (NFS-style) cache directory: publish, reuse on another host, cross-host build lock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from sandbox.env_cache import EnvCache
from sandbox.pyenv import probe
from sandbox.shared_cache import SharedCache

PYTHON = probe(sys.executable)


def run_in(python, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _age(cache: EnvCache, keys: list[str]) -> None:
    for stamp, key in enumerate(keys, start=1):
        os.utime(cache.root / "entries" / key / "last-used", (stamp * 1000, stamp * 1000))


def test_an_entry_in_use_survives_a_prune_that_would_pick_it(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    running = cache.materialize("six==1.16.0", PYTHON, tmp_path / "running", log=print)
    other = cache.materialize("idna==3.7", PYTHON, tmp_path / "other", log=print)
    newest = cache.materialize("", PYTHON, tmp_path / "newest", log=print)
    for ended in (running, other, newest):
        ended.lease.close()
    _age(cache, [running.key, other.key, newest.key])   # `running` is the least recently used
    held = cache.hold(running.key)                        # as a running task holds its venv's entry
    try:
        evicted = cache.prune(max_entries=2, log=print)
        assert evicted == [other.key]                     # the next one instead
        assert cache.prune(min_free_bytes=1 << 62, log=print) == [newest.key]   # no free-space floor evicts it
        assert [e.key for e in cache.entries()] == [running.key]
        assert run_in(running.python, "import six; print(six.__version__)") == "1.16.0"
    finally:
        held.close()
    assert cache.prune(max_entries=0, log=print) == [running.key]   # released: it may go now


def test_the_shared_cache_builds_once_for_the_cluster(light_builder, tmp_path):
    shared = tmp_path / "nfs"
    first = EnvCache(tmp_path / "host1", builder=light_builder, shared=shared, compile_bytecode="off")
    built = first.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
    assert not built.cache_hit and (shared / "entries" / built.key / "COMPLETE").is_file()
    assert not (shared / "entries" / built.key / "manifest.json").exists()   # per-host stamps stay local
    light_builder.forbid()                                 # the second host must not install anything
    second = EnvCache(tmp_path / "host2", builder=light_builder, shared=shared, compile_bytecode="off")
    lines: list[str] = []
    reused = second.materialize("six==1.16.0", PYTHON, tmp_path / "t2", log=lines.append)
    assert reused.key == built.key and any("copied from the shared cache" in line for line in lines)
    assert run_in(reused.python, "import six, sys; print(six.__version__, sys.prefix)") == \
        f"1.16.0 {tmp_path / 't2'}"
    again = second.materialize("six==1.16.0", PYTHON, tmp_path / "t3", log=print)   # the local copy is sealed
    assert again.cache_hit and not list((tmp_path / "host2" / "locks").glob("*.building"))


def test_a_host_waits_for_another_hosts_build_and_takes_over_a_stale_lock(tmp_path):
    shared = SharedCache(tmp_path / "nfs", stale_s=3600, poll_s=0.05)
    lock = tmp_path / "nfs" / "locks" / "k1.building"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "gpu-node-7", "pid": 42, "since": time.time()}))
    seen: list[bool] = []
    lines: list[str] = []

    def wait() -> None:
        with shared.building("k1", lines.append) as ready:
            seen.append(ready)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and "gpu-node-7 (pid 42)" in lines[0]
    entry = tmp_path / "nfs" / "entries" / "k1"
    entry.mkdir(parents=True)
    (entry / "COMPLETE").write_text("1\n")                 # the other host published it
    waiter.join(10)
    assert seen == [True]
    stale = tmp_path / "nfs" / "locks" / "k2.building"
    stale.write_text("{}")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))   # its host died two hours ago
    with shared.building("k2", print) as ready:
        assert ready is False and json.loads(stale.read_text())["pid"] == os.getpid()
    assert not stale.exists()
