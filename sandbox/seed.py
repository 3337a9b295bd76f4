"""Seeding pip into a new venv beside its install, instead of before it (issue 24, cold build).

    seeding = start_seed(uv, python, target, run_env)     # `uv venv --seed` into a sibling dir, in the background
    ... `uv pip install -r requirements` into target ...
    finish_seed(seeding, target)                           # its packages moved into target

`uv venv --seed` puts pip, setuptools and wheel (and wheel's packaging) into a venv before
anything else can be installed into it: ~0.1 s on the cold build's path with uv's cache warm,
about a third of the bare install here. The seed does not depend on the requirements, so a second
`uv venv --seed` builds it at the same time in a sibling directory (`<target>.seed`), and once
both are done each seed distribution is moved into the target's site-packages (one rename per
top-level name its RECORD lists), its console scripts into the target's bin/ with their `#!`
line pointing at the target's interpreter. A distribution the requirements installed themselves
(a pinned setuptools, a newer packaging) is left out: what the requirements asked for wins, as it
did when the install ran over the seed. The result is the venv a seeded build gave, and the
cache seals it afterwards as before.

The seed runs offline, from uv's cache: asking the index for the newest pip, setuptools and wheel
on every cold build cost three index revalidations and about twice the seed's CPU, beside an
install that wants both cores. Only when the cache lacks them (a fresh machine) does it run again
with the index, which fills the cache for the next builds. So the seed is the newest of each
that uv has cached, not the index's newest of the day.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sandbox.manifest import remove_tree

__all__ = ["Seeding", "abandon", "finish_seed", "merge", "seed_dir", "start_seed"]


@dataclass
class Seeding:
    """A `uv venv --seed` running in the background into `directory`: first from uv's cache
    alone (`UV_OFFLINE`), again with the index only when the cache lacks a seed package."""

    proc: subprocess.Popen[bytes]
    directory: Path
    command: list[str]
    env: dict[str, str]
    asked_index: bool = False


def seed_dir(target: Path) -> Path:
    return target.with_name(f"{target.name}.seed")


def start_seed(uv: Path, python: Path, target: Path, env: dict[str, str]) -> Seeding:
    """Start `uv venv --seed` into the target's sibling seed directory; do not wait for it.

    It runs offline: online, uv asks the index for the newest pip, setuptools and wheel on every
    seed (three revalidations of PyPI, or of the configured index, per cold build, and twice the
    CPU beside the install here). Offline it takes the newest of them in uv's cache, which the
    first online seed on a machine filled (finish_seed falls back to it)."""
    directory = seed_dir(target)
    remove_tree(directory)
    command = [str(uv), "venv", "--quiet", "--seed", "--python", str(python), str(directory)]
    return Seeding(_spawn(command, {**env, "UV_OFFLINE": "1"}), directory, command, env)


def _spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def finish_seed(seeding: Seeding, target: Path, timeout: float) -> str | None:
    """Wait for the seed, move its distributions into `target`; None when done, else why not
    (the seed directory is removed either way). A seed that failed offline runs once more with
    the index (a fresh uv cache); the user's own UV_OFFLINE, if set, holds for that run too."""
    try:
        err = _wait(seeding, timeout)
        if err is not None and seeding.proc.returncode != 0 and not seeding.asked_index:
            remove_tree(seeding.directory)
            seeding.proc, seeding.asked_index = _spawn(seeding.command, seeding.env), True
            err = _wait(seeding, timeout)
        if err is None:
            return f"'uv venv --seed' timed out after {timeout:.0f}s"
        if seeding.proc.returncode != 0:
            return err.decode("utf-8", "replace").strip() or f"'uv venv --seed' exited {seeding.proc.returncode}"
        merge(seeding.directory, target)
        return None
    except OSError as exc:
        return f"moving the seed into the venv: {exc}"
    finally:
        remove_tree(seeding.directory)


def _wait(seeding: Seeding, timeout: float) -> bytes | None:
    """Its standard error once it ends; None when it ran past `timeout` (it is killed)."""
    try:
        return seeding.proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        seeding.proc.kill()
        seeding.proc.communicate()
        return None


def abandon(seeding: Seeding) -> None:
    """The install failed: stop the seed and remove what it made."""
    if seeding.proc.poll() is None:
        seeding.proc.kill()
    seeding.proc.communicate()
    remove_tree(seeding.directory)


def merge(seed: Path, target: Path) -> list[str]:
    """Move each distribution of venv `seed` that `target` lacks into `target`; their names."""
    source, dest = site_packages(seed), site_packages(target)
    have = {_dist_name(p.name) for p in dest.glob("*.dist-info")}
    moved = []
    for info in sorted(source.glob("*.dist-info")):
        if _dist_name(info.name) in have:
            continue
        tops, scripts = _record(info)
        for name in sorted(tops):
            if (source / name).exists() and not os.path.lexists(dest / name):
                os.rename(source / name, dest / name)
        for script in sorted(scripts):
            _move_script(seed / "bin" / script, target / "bin" / script, target)
        moved.append(_dist_name(info.name))
    return moved


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise FileNotFoundError(f"no site-packages in {venv}")
    return found[0]


def _dist_name(dist_info: str) -> str:
    """`setuptools-84.2.1.dist-info` -> `setuptools` (PEP 503 normalized)."""
    return re.sub(r"[-_.]+", "-", dist_info.removesuffix(".dist-info").rsplit("-", 1)[0]).lower()


def _record(info: Path) -> tuple[set[str], set[str]]:
    """The top-level names a distribution installed into site-packages, and its scripts in bin/."""
    tops, scripts = {info.name}, set()
    for line in (info / "RECORD").read_text().splitlines():
        path = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        parts = path.split("/")
        if parts[0] == "..":
            if len(parts) >= 2 and parts[-2] == "bin":
                scripts.add(parts[-1])
        elif parts[0]:
            tops.add(parts[0])
    return tops, scripts


def _move_script(script: Path, dest: Path, target: Path) -> None:
    """A console script into the target's bin/, its `#!` line naming the target's interpreter."""
    if not script.is_file() or os.path.lexists(dest):
        return
    data = script.read_bytes().replace(f"{script.parent}/".encode(), f"{target}/bin/".encode())
    dest.write_bytes(data)
    shutil.copymode(script, dest)
