"""The environment cache with real venvs: hits, overlay venvs, concurrency, corruption, LRU, bytecode."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from sandbox.env_cache import BYTECODE_MARKER, MARKER, EnvCache
from sandbox.linkfarm import link_tree
from sandbox.overlay import HOOK_NAME, PTH_NAME
from sandbox.pyenv import probe
from sandbox.requirements import parse_requirements
from shipyard.locks import file_lock

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = probe(sys.executable)
SITE = f"lib/python{PYTHON.short_version}/site-packages"
SIX_PYC = f"{SITE}/__pycache__/six.{PYTHON.implementation}.pyc"
BYTECODE_WAIT = 120.0
"""Upper bound on polling for a background compiler (it normally takes a second or two)."""


def settled(cache: EnvCache, result):
    """`result` once the background compiler of its entry has finished (sizes and locks are stable)."""
    assert cache.wait_for_bytecode(result.key, BYTECODE_WAIT), "background bytecode compile did not finish"
    return result


def run_in(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def import_writing_bytecode(python: Path, module: str) -> None:
    """Import as a task would, letting Python write __pycache__ (whatever this shell's PYTHONDONTWRITEBYTECODE)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([str(python), "-c", f"import {module}"], env=env, capture_output=True, check=True)


def test_second_materialize_is_an_overlay_cache_hit(builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=builder)
    # Given a cold cache, the first materialize builds
    first = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
    assert not first.cache_hit and builder.calls == 1
    # When the same requirements are materialized again, no installer runs
    builder.forbid()
    second = cache.materialize("# Python 3.11.7\nsix == 1.16.0\n", PYTHON, tmp_path / "t2", log=print)
    assert second.cache_hit and second.key == first.key and second.frozen == first.frozen
    assert second.python == tmp_path / "t2" / "bin" / "python"
    # Then the target imports the pinned version from its own prefix
    out = run_in(second.python, "import six, sys; print(six.__version__, sys.prefix)")
    assert out == f"1.16.0 {tmp_path / 't2'}"
    # And nothing of the packages is linked: the target's own site-packages holds one .pth
    # that puts the entry's after it, where six, pip and their metadata are found
    entry = cache.root / "entries" / first.key / "venv"
    assert sorted(os.listdir(tmp_path / "t2" / SITE)) == sorted([PTH_NAME, HOOK_NAME, "__pycache__"])
    assert os.listdir(tmp_path / "t2" / SITE / "__pycache__") == [f"_shipyard_overlay.{PYTHON.implementation}.pyc"]
    out = run_in(second.python, "import six, pip, importlib.metadata as m; print(six.__file__, m.version('six'))")
    assert out == f"{entry / SITE / 'six.py'} 1.16.0"
    hook = run_in(second.python, "import _shipyard_overlay as h; print(h.__cached__)")   # precompiled for the run
    assert hook == str(tmp_path / "t2" / SITE / "__pycache__" / f"_shipyard_overlay.{PYTHON.implementation}.pyc")
    listed = subprocess.run([str(tmp_path / "t2" / "bin" / "pip"), "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout
    assert "six==1.16.0" in listed.split()


def test_path_bearing_files_are_rewritten_copies(builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=builder)
    cache.materialize("", PYTHON, tmp_path / "t1", log=print)
    result = cache.materialize("", PYTHON, tmp_path / "t2", log=print)
    entry = cache.root / "entries" / result.key / "venv"
    target = tmp_path / "t2"
    pip_script = (target / "bin" / "pip").read_text()  # a shebang, or a /bin/sh trampoline for long paths
    assert f"{target}/bin/python" in pip_script and f"tmp/{result.key}" not in pip_script
    assert f"'{target}'" in (target / "bin" / "activate").read_text()
    assert os.stat(target / "bin" / "pip").st_ino != os.stat(entry / "bin" / "pip").st_ino
    assert os.path.islink(target / "bin" / "python")
    version = subprocess.run([str(target / "bin" / "pip"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("pip ")


def test_concurrent_threads_build_once(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    results, errors = [], []

    def materialize(name: str) -> None:
        try:
            results.append(cache.materialize("six==1.16.0", PYTHON, tmp_path / name, log=lambda _: None))
        except Exception as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=materialize, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and light_builder.calls == 1
    assert sorted(r.cache_hit for r in results) == [False, True, True]
    assert len(cache.entries()) == 1
    for result in results:
        assert run_in(result.python, "import six; print(six.__version__)") == "1.16.0"


def test_an_entry_another_agent_built_while_this_one_waited_for_the_lock_is_a_reuse(light_builder, tmp_path,
                                                                                   monkeypatch):
    """The entry was not there when this agent looked (before the lock), and was complete once it
    held the lock: it was built by the agent that held the lock, so this is a reuse ("cache hit"
    in the task's log), not a build."""
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    first = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t0", log=lambda _: None)
    monkeypatch.setattr(cache, "_reuse", lambda *args: None)  # the look before the lock: nothing yet
    second = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=lambda _: None)
    assert (first.cache_hit, second.cache_hit, light_builder.calls) == (False, True, 1)
    assert run_in(second.python, "import six; print(six.__version__)") == "1.16.0"


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sandbox.env_cache import EnvCache
    from sandbox.pyenv import EnvBuilder
    cache = EnvCache(Path(sys.argv[1]), builder=EnvBuilder(uv_cache_dir=Path(sys.argv[2]), seed_pip=False))
    result = cache.materialize("idna==3.7", sys.executable, Path(sys.argv[3]), log=lambda _: None)
    print(result.cache_hit)
    """
)


def test_concurrent_processes_produce_one_entry(uv_cache_dir, tmp_path):
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / "cache"), str(uv_cache_dir), str(tmp_path / f"t{i}")],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    hits = sorted(child.communicate(timeout=300)[0].strip() for child in children)
    assert [child.returncode for child in children] == [0, 0]
    assert hits == ["False", "True"]
    assert len(EnvCache(tmp_path / "cache").entries()) == 1
    assert run_in(tmp_path / "t1" / "bin" / "python", "import idna; print(idna.__version__)") == "3.7"


def test_entry_without_marker_is_ignored_and_rebuilt(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    key = cache.key(parse_requirements("six==1.16.0"), PYTHON)
    # Given a half-written entry for the key (a crash before the marker)
    junk = cache.root / "entries" / key
    (junk / "venv").mkdir(parents=True)
    (junk / "meta.json").write_text("{")
    # When it is materialized, the entry is rebuilt rather than used
    logged: list[str] = []
    result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=logged.append)
    assert not result.cache_hit and light_builder.calls == 1
    assert f"discarding incomplete cache entry {key[:12]}" in logged
    assert (junk / MARKER).is_file()
    # And a complete entry whose marker disappears is rebuilt too
    (junk / MARKER).unlink()
    again = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t2", log=print)
    assert not again.cache_hit and light_builder.calls == 2
    assert run_in(again.python, "import six; print(six.__version__)") == "1.16.0"


def test_failed_build_leaves_nothing_behind(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    with pytest.raises(Exception, match="nosuchpkg"):
        cache.materialize("nosuchpkg==9.9", PYTHON, tmp_path / "t1", log=print)
    assert cache.entries() == [] and list((cache.root / "tmp").iterdir()) == []


def test_prune_evicts_least_recently_used(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    keys = {}
    for name, reqs in (("a", "six==1.16.0"), ("b", "idna==3.7"), ("c", "")):
        result = settled(cache, cache.materialize(reqs, PYTHON, tmp_path / name, log=print))
        result.lease.close()   # the run ended
        keys[name] = result.key
    for stamp, name in enumerate("abc", start=1):
        os.utime(cache.root / "entries" / keys[name] / "last-used", (stamp * 1000, stamp * 1000))
    # Using "a" again makes "b" the least recently used
    running = cache.materialize("six==1.16.0", PYTHON, tmp_path / "a2", log=print)
    assert running.cache_hit
    sizes = {e.key: e.size for e in cache.entries()}
    evicted = cache.prune(sum(sizes.values()) - sizes[keys["b"]], log=print)
    assert evicted == [keys["b"]]
    assert {e.key for e in cache.entries()} == {keys["a"], keys["c"]}
    # An entry in use (locked, or held by a run's lease) is never evicted
    with file_lock(cache.root / "locks" / f"{keys['c']}.lock", shared=True):
        assert cache.prune(0, log=print) == []
    # and the held run's venv keeps working; once its lease is closed the entry may go
    assert run_in(tmp_path / "a2" / "bin" / "python", "import six; print(six.__version__)") == "1.16.0"
    running.lease.close()
    assert cache.prune(0, log=print) == [keys["c"], keys["a"]]


def test_max_bytes_prunes_after_a_build(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", max_bytes=1, builder=light_builder)
    first = settled(cache, cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print))
    first.lease.close()
    second = cache.materialize("idna==3.7", PYTHON, tmp_path / "t2", log=print)
    assert [e.key for e in cache.entries()] == [second.key]  # the new entry is kept, the old one evicted
    assert first.key != second.key


def test_uncacheable_requirements_build_in_place(light_builder, tmp_path):
    (tmp_path / "base.txt").write_text("six==1.16.0\n")
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    logged: list[str] = []
    result = cache.materialize(f"-r {tmp_path / 'base.txt'}", PYTHON, tmp_path / "t", log=logged.append)
    assert (result.key, result.cache_hit) == ("", False)
    assert any(line.startswith("environment not cached:") for line in logged)
    assert "six==1.16.0" in result.frozen and cache.entries() == []


def test_key_covers_interpreter_requirements_and_extra(tmp_path):
    cache = EnvCache(tmp_path)
    reqs = parse_requirements("six==1.16.0")
    key = cache.key(reqs, PYTHON)
    assert key == cache.key(parse_requirements("Six == 1.16.0  # same"), PYTHON)
    assert key != cache.key(reqs, PYTHON, extra="cuda12.1")
    assert key != cache.key(parse_requirements("six==1.15.0"), PYTHON)
    other = PYTHON.__class__(PYTHON.path, "3.99.0", PYTHON.platform, PYTHON.implementation)
    assert key != cache.key(reqs, other)


def test_other_filesystem_gets_copies(light_builder, tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the tmp dir")
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    logged: list[str] = []
    with tempfile.TemporaryDirectory(dir=shm) as other:
        result = cache.materialize("six==1.16.0", PYTHON, Path(other) / "venv", log=logged.append)
        assert run_in(result.python, "import six; print(six.__version__)") == "1.16.0"
    materialized = [line for line in logged if " materialized at " in line]
    assert len(materialized) == 1
    assert re.search(r"0 files linked, \d+ rewritten, [1-9]\d* copied", materialized[0])


def test_target_must_be_empty(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        EnvCache(tmp_path / "cache").materialize("", PYTHON, tmp_path / "t")


def test_link_tree_rewrites_only_path_bearing_files(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "lib").mkdir()
    (src / "bin" / "tool").write_text(f"#!{src}/bin/python\n")
    (src / "lib" / "data.txt").write_text(f"mentions {src} but is not rewritten\n")
    (src / "pyvenv.cfg").write_text("home = /usr/bin\n")
    os.symlink(f"{src}/lib", src / "bin" / "abs-link")
    os.symlink("../lib", src / "bin" / "rel-link")
    stats = link_tree(src, tmp_path / "dst", str(src), str(tmp_path / "dst"))
    dst = tmp_path / "dst"
    assert (dst / "bin" / "tool").read_text() == f"#!{dst}/bin/python\n"
    assert os.readlink(dst / "bin" / "abs-link") == f"{dst}/lib"
    assert os.readlink(dst / "bin" / "rel-link") == "../lib"
    assert os.stat(dst / "lib" / "data.txt").st_ino == os.stat(src / "lib" / "data.txt").st_ino
    assert (stats.rewritten, stats.linked, stats.symlinks) == (1, 2, 2)
    assert json.dumps(stats.__dict__)  # plain numbers, loggable


def test_link_tree_turns_overlong_shebangs_into_trampolines(tmp_path):
    src = tmp_path / "s"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "tool").write_text(f"#!{src}/bin/python\nimport sys\nprint('ran', sys.argv[1:])\n")
    (src / "bin" / "tool").chmod(0o755)
    os.symlink(sys.executable, src / "bin" / "python")
    deep = tmp_path / ("d" * 120) / "venv"
    link_tree(src, deep, str(src), str(deep))
    assert (deep / "bin" / "tool").read_text().startswith("#!/bin/sh\n")
    out = subprocess.run([str(deep / "bin" / "tool"), "x"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ran ['x']"


# -- bytecode ------------------------------------------------------------------------------------


def test_bytecode_is_compiled_in_the_background_and_shared(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    first = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
    entry = cache.root / "entries" / first.key
    # The entry is published before its bytecode; a background compiler finishes it
    assert (entry / MARKER).is_file()
    settled(cache, first)
    assert (entry / "venv" / SIX_PYC).is_file() and not (entry / "bytecode-staging").exists()
    assert json.loads((entry / BYTECODE_MARKER).read_text())["size"] > 0
    assert {e.key: e.size for e in cache.entries()}[first.key] == json.loads((entry / BYTECODE_MARKER).read_text())["size"]
    # The entry stays sealed: its directories are read-only, the .pyc is stamped
    assert stat.S_IMODE(os.stat(entry / "venv" / SITE / "__pycache__").st_mode) & 0o222 == 0
    assert f"{SITE}/__pycache__/six.{PYTHON.implementation}.pyc" in json.loads((entry / "bytecode-manifest.json").read_text())
    # A later run imports the entry's compiled six, and a clean hand-over after it needs no rebuild
    first.lease.close()
    second = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t2", log=print)
    before = os.stat(entry / "venv" / SIX_PYC)
    assert run_in(second.python, "import six; print(six.__cached__)") == str(entry / "venv" / SIX_PYC)
    assert os.stat(entry / "venv" / SIX_PYC).st_mtime_ns == before.st_mtime_ns
    second.lease.close()
    assert cache.materialize("six==1.16.0", PYTHON, tmp_path / "t3", log=print).cache_hit


def test_sync_bytecode_is_complete_when_materialize_returns(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="sync")
    result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
    entry = cache.root / "entries" / result.key
    assert cache.bytecode_complete(result.key) and (entry / "venv" / SIX_PYC).is_file()
    assert run_in(result.python, "import six; print(six.__cached__)") == str(entry / "venv" / SIX_PYC)


def test_bytecode_off_and_runs_write_none_into_the_entry(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
    entry = cache.root / "entries" / result.key
    assert not cache.bytecode_complete(result.key) and not (entry / "venv" / SIX_PYC).exists()
    # Importing in the run writes no .pyc into the sealed entry (not even as root, whom modes
    # do not stop), nor a copy into the run
    import_writing_bytecode(result.python, "six")
    assert not (entry / "venv" / SITE / "__pycache__").exists()
    assert not list((tmp_path / "t1").rglob("six.*.pyc"))
    # so the entry is still intact when the run ends
    result.lease.close()
    assert cache.materialize("six==1.16.0", PYTHON, tmp_path / "t2", log=print).cache_hit


def test_compiler_stages_outside_the_entry_and_a_killed_one_is_redone(light_builder, tmp_path):
    off = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    key = off.materialize("six==1.16.0", PYTHON, tmp_path / "t0", log=print).key
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    entry = cache.root / "entries" / key
    # Given a compiler at work on the entry (its lock held), halfway through its staging tree
    partial = entry / "bytecode-staging" / f"{SIX_PYC}.140234"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a pyc")
    logged: list[str] = []
    with file_lock(cache.root / "locks" / f"{key}.bytecode.lock"):
        result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=logged.append)
        assert f"bytecode of environment {key[:12]} is being compiled in the background" in logged
    # Then the run imports six from source, the entry has no bytecode and is handed out again
    assert result.cache_hit and run_in(result.python, "import six; print(six.__version__)") == "1.16.0"
    assert not (entry / "venv" / SIX_PYC).exists()
    # When no compiler is left, the next materialize starts one, which clears the leftover
    settled(cache, cache.materialize("six==1.16.0", PYTHON, tmp_path / "t2", log=print))
    assert not partial.exists() and (entry / "venv" / SIX_PYC).is_file()


FAKE_COMPILER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    compiling = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(compiling, fcntl.LOCK_EX)
    entry = os.open(sys.argv[2], os.O_RDWR | os.O_CREAT)
    fcntl.flock(entry, fcntl.LOCK_SH)
    os.makedirs(os.path.dirname(sys.argv[3]), exist_ok=True)
    with open(sys.argv[3], "wb") as partial:
        partial.write(b"half a pyc")
    print("compiling", flush=True)
    time.sleep(600)
    """
)


def test_killed_compiler_blocks_prune_only_while_alive(light_builder, tmp_path):
    off = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    built = off.materialize("six==1.16.0", PYTHON, tmp_path / "t0", log=print)
    built.lease.close()
    key = built.key
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    partial = cache.root / "entries" / key / "bytecode-staging" / f"{SIX_PYC}.777"
    # Given a compiler holding the entry's locks the way compile_entry does
    compiler = subprocess.Popen(
        [sys.executable, "-c", FAKE_COMPILER, str(cache.root / "locks" / f"{key}.bytecode.lock"),
         str(cache.root / "locks" / f"{key}.lock"), str(partial)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert compiler.stdout.readline().strip() == "compiling"
        # While it runs, prune leaves the entry alone and materialize still works
        assert cache.prune(0, log=print) == []
        result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
        assert run_in(result.python, "import six; print(six.__version__)") == "1.16.0"
        result.lease.close()
    finally:
        compiler.kill()
        compiler.wait()
    # When it has been killed, the entry is still usable, and the next materialize recompiles it
    assert not cache.bytecode_complete(key)
    again = settled(cache, cache.materialize("six==1.16.0", PYTHON, tmp_path / "t2", log=print))
    again.lease.close()
    assert not partial.exists() and (cache.root / "entries" / key / "venv" / SIX_PYC).is_file()
    assert cache.prune(0, log=print) == [key]


def test_compile_entry_holds_off_prune(light_builder, tmp_path, monkeypatch):
    off = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    built = off.materialize("six==1.16.0", PYTHON, tmp_path / "t0", log=print)
    built.lease.close()
    key = built.key
    evicted_meanwhile = []

    def compile_and_prune(entry):
        evicted_meanwhile.extend(off.prune(0, log=print))
        return real_compile(entry)

    from sandbox import cache_bytecode

    real_compile = cache_bytecode.compile_staged
    monkeypatch.setattr(cache_bytecode, "compile_staged", compile_and_prune)
    assert off.compile_entry(key) and evicted_meanwhile == []
    # A second compiler for the same entry is a no-op, and a finished entry can be evicted
    assert off.compile_entry(key) and off.prune(0, log=print) == [key]


def test_compile_bytecode_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="compile_bytecode"):
        EnvCache(tmp_path, compile_bytecode="lazy")


def test_link_tree_skips_bytecode_being_written(tmp_path):
    src = tmp_path / "src" / "pkg" / "__pycache__"
    src.mkdir(parents=True)
    (src / "m.cpython-311.pyc").write_bytes(b"done")
    (src / "m.cpython-311.pyc.140234").write_bytes(b"half")
    (tmp_path / "src" / "pkg" / "data.bin.1").write_bytes(b"not bytecode, linked")
    stats = link_tree(tmp_path / "src", tmp_path / "dst", str(tmp_path / "src"), str(tmp_path / "dst"))
    assert sorted(os.listdir(tmp_path / "dst" / "pkg" / "__pycache__")) == ["m.cpython-311.pyc"]
    assert (tmp_path / "dst" / "pkg" / "data.bin.1").is_file() and stats.linked == 2


def test_entry_size_comes_from_the_seal_without_a_second_walk(builder, tmp_path):
    # Given an entry built with bytecode off (nothing changes it after the build)
    cache = EnvCache(tmp_path / "cache", builder=builder, compile_bytecode="off")
    result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t", log=print)
    entry = cache.root / "entries" / result.key
    # Then the size recorded from the seal's stamps is what a walk of its venv and manifest finds
    walked: dict[int, int] = {}
    for path in [*(entry / "venv").rglob("*"), entry / "manifest.json"]:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            walked[st.st_ino] = st.st_size
    assert json.loads((entry / "meta.json").read_text())["size"] == sum(walked.values())
    result.lease.close()


def test_bytecode_later_starts_the_compiler_only_after_the_start(light_builder, tmp_path, monkeypatch):
    """The daemon spawns the task first, then starts the entry's compiler (result.after_start)."""
    from sandbox import cache_bytecode

    started: list[str] = []
    monkeypatch.setattr(cache_bytecode, "start_compiler", lambda root, key, timeout: started.append(key))
    cache = EnvCache(tmp_path / "cache", builder=light_builder)
    result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print, bytecode_later=True)
    assert started == []
    result.after_start()
    result.after_start()
    assert started == [result.key]
    result.lease.close()
