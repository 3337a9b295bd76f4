"""The environment cache with real venvs: hits, hard links, concurrency, corruption, LRU."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from sandbox.env_cache import MARKER, EnvCache
from sandbox.linkfarm import link_tree
from sandbox.locks import file_lock
from sandbox.pyenv import probe
from sandbox.requirements import parse_requirements

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = probe(sys.executable)
SITE = f"lib/python{PYTHON.short_version}/site-packages"


def run_in(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_second_materialize_is_a_hardlinked_cache_hit(builder, tmp_path):
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
    # And package files are hard links into the cache entry, not copies
    entry = cache.root / "entries" / first.key / "venv"
    assert os.stat(tmp_path / "t2" / SITE / "six.py").st_ino == os.stat(entry / SITE / "six.py").st_ino


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
    assert str(target) in version.stdout


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
        keys[name] = cache.materialize(reqs, PYTHON, tmp_path / name, log=print).key
    for stamp, name in enumerate("abc", start=1):
        os.utime(cache.root / "entries" / keys[name] / "last-used", (stamp * 1000, stamp * 1000))
    # Using "a" again makes "b" the least recently used
    assert cache.materialize("six==1.16.0", PYTHON, tmp_path / "a2", log=print).cache_hit
    sizes = {e.key: e.size for e in cache.entries()}
    evicted = cache.prune(sum(sizes.values()) - sizes[keys["b"]], log=print)
    assert evicted == [keys["b"]]
    assert {e.key for e in cache.entries()} == {keys["a"], keys["c"]}
    # An entry in use is never evicted
    with file_lock(cache.root / "locks" / f"{keys['c']}.lock", shared=True):
        assert cache.prune(0, log=print) == [keys["a"]]
    assert [e.key for e in cache.entries()] == [keys["c"]]
    # Targets that were materialized earlier keep working (their files are links)
    assert run_in(tmp_path / "a2" / "bin" / "python", "import six; print(six.__version__)") == "1.16.0"


def test_max_bytes_prunes_after_a_build(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", max_bytes=1, builder=light_builder)
    first = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
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
    assert re.search(r"0 files linked, \d+ rewritten, [1-9]\d* copied", logged[-1])


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
