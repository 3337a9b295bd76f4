"""The cold build seals the entry while uv takes its freeze list, by GNU chmod and find (or a
walk on two threads) (issue 24): the entry stays as safe as when the steps ran one after another."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import cache_build, manifest
from sandbox.env_cache import EnvCache
from sandbox.proc import run_captured
from sandbox.pyenv import probe

PYTHON = probe(sys.executable)


def make_tree(root: Path) -> None:
    for top in range(4):
        for sub in range(5):
            folder = root / f"pkg{top}" / f"sub{sub}" / "__pycache__"
            folder.mkdir(parents=True)
            (folder.parent / "mod.py").write_text(f"x = {top}{sub}\n")
            (folder / "mod.cpython-311.pyc").write_bytes(b"pyc")
    (root / "link").symlink_to("pkg0")


def test_threaded_seal_stamps_what_one_thread_does(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    make_tree(one)
    make_tree(two)
    stamps_one = manifest.seal(one, workers=1, native=False)
    stamps_two = manifest.seal(two, workers=3, native=False)
    assert len(stamps_two) == len(stamps_one) == 41
    def size_and_mode(stamps: manifest.Stamps) -> dict[str, list]:
        return {k: v if v[0] == "->" else [v[1], v[3]] for k, v in stamps.items()}

    assert size_and_mode(stamps_two) == size_and_mode(stamps_one)
    assert manifest.verify(two, stamps_two) == 41
    for dirpath, _dirs, _files in os.walk(two):
        assert not os.stat(dirpath).st_mode & 0o222
    assert set(manifest.seal(two, only_bytecode=True)) == {k for k in stamps_two if "__pycache__" in k}


def test_threaded_seal_raises_what_a_thread_hit(tmp_path, monkeypatch):
    make_tree(tmp_path / "t")
    real = manifest._seal_file

    def failing(entry):
        if entry.name == "mod.py" and "sub3" in entry.path:
            raise PermissionError(entry.path)
        return real(entry)

    monkeypatch.setattr(manifest, "_seal_file", failing)
    with pytest.raises(PermissionError, match="sub3"):
        manifest.seal(tmp_path / "t", workers=2, native=False)


def odd_tree(root: Path) -> None:
    """make_tree plus what a listing could get wrong: a newline, a tab and a non-UTF-8 byte in
    names, a setuid file, a dangling symlink, a file from before 1970, an empty directory."""
    make_tree(root)
    (root / "odd dir").mkdir()
    (root / "odd dir" / "new\nline\ttab").write_text("x")
    os.chmod(root / "odd dir" / "new\nline\ttab", 0o4755)
    (root / os.fsdecode(b"bad\xffname")).write_text("y")
    (root / "dangling").symlink_to("/nonexistent/target")
    (root / "empty").mkdir()
    old = root / "old.txt"
    old.write_text("1965")
    os.utime(old, ns=(-157_766_400_123_456_789, -157_766_400_123_456_789))


def test_the_native_seal_stamps_and_seals_what_the_walk_does(tmp_path):
    native, walked = tmp_path / "native", tmp_path / "walked"
    odd_tree(native)
    odd_tree(walked)
    by_find = manifest.seal(native)
    by_walk = manifest.seal(walked, native=False)

    def size_and_mode(stamps: manifest.Stamps) -> dict[str, list]:   # the trees differ in inodes, mtimes
        return {k: v if v[0] == "->" else [v[1], v[3]] for k, v in stamps.items()}

    assert size_and_mode(by_find) == size_and_mode(by_walk)
    assert len(by_find) == 45 and by_find["odd dir/new\nline\ttab"][3] == 0o4555
    assert by_find["old.txt"][2] == by_walk["old.txt"][2] == -157_766_400_123_456_789
    # inodes and mtimes as lstat has them
    assert manifest.verify(native, by_find) == manifest.verify(walked, by_walk) > 40
    for dirpath, _dirs, files in os.walk(native):
        assert not os.stat(dirpath).st_mode & 0o222
        assert not any(os.lstat(os.path.join(dirpath, f)).st_mode & 0o222 for f in files
                       if not os.path.islink(os.path.join(dirpath, f)))


def test_without_gnu_find_the_walk_seals(tmp_path, monkeypatch):
    odd_tree(tmp_path / "t")
    monkeypatch.setattr(manifest.shutil, "which", lambda name: None if name == "find" else "/usr/bin/" + name)
    walked = []
    real = manifest._seal_dir
    monkeypatch.setattr(manifest, "_seal_dir", lambda *a: walked.append(a[0]) or real(*a))
    stamps = manifest.seal(tmp_path / "t")
    assert walked and len(stamps) == 45 and manifest.verify(tmp_path / "t", stamps) > 40


def test_a_listing_not_in_the_format_asked_for_falls_back_to_the_walk(tmp_path, monkeypatch):
    odd_tree(tmp_path / "t")
    monkeypatch.setattr(manifest, "_FIND_FORMAT", "%p\\0" * manifest._FIELDS)   # paths where numbers belong
    stamps = manifest.seal(tmp_path / "t")
    assert len(stamps) == 45 and manifest.verify(tmp_path / "t", stamps) > 40


def test_a_failure_beside_the_command_kills_it():
    def boom() -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_captured([sys.executable, "-c", "import time; time.sleep(30)"], timeout=60, beside=boom)
    assert time.monotonic() - started < 10
    out = run_captured(["echo", "done"], timeout=10, beside=lambda: None)
    assert out.stdout == "done\n"


def test_a_crash_during_the_seal_leaves_nothing_a_later_run_trusts(light_builder, tmp_path, monkeypatch):
    # Given a seal that dies halfway (the freeze is running beside it)
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    real = manifest.seal

    def dies(root: Path, *args, **kwargs):
        real(root / "lib", *args, **kwargs)   # part of the venv sealed, the rest not
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_build.manifest, "seal", dies)
    with pytest.raises(KeyboardInterrupt):
        cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
    # Then nothing is published, no temporary build is left, and no freeze is still running
    assert cache.entries() == [] and list((cache.root / "tmp").iterdir()) == []
    ps = subprocess.run(["pgrep", "-f", f"freeze --python {cache.root}"], capture_output=True, text=True)
    assert ps.stdout == ""
    # And the next run builds a complete entry whose manifest matches its venv
    monkeypatch.setattr(cache_build.manifest, "seal", real)
    result = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t2", log=print)
    assert not result.cache_hit and light_builder.calls == 2
    assert any(line.startswith("six==") for line in result.frozen)
    entry = cache.root / "entries" / result.key
    assert manifest.verify(entry / "venv", manifest.load(entry / "manifest.json")) > 0
    result.lease.close()
