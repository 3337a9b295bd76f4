"""An overlay venv: a run's own small venv layered over a sealed cache entry, nothing linked per package.

    stats = make_overlay(entry / "venv", target, built_at=meta["built_at"], owner=None)
    # target/bin/python runs with sys.prefix == target; imports find the entry's packages

What the run gets (env_cache.py hands it out):

    target/pyvenv.cfg, bin/          as in a link farm (linkfarm.py): the python symlinks, the
                                     console scripts and activate* as copies with the target's path
    target/share/, include/, ...     every other part of the venv outside site-packages, linked
    target/lib/pythonX.Y/site-packages/
                                     empty and the run's own (writable), but for two files:
        _shipyard_entry.pth          `import _shipyard_overlay; _shipyard_overlay.attach(<entry>, <its site-packages>)`
        _shipyard_overlay.py         overlay_hook.py

At start, site.py processes the run's site-packages (a venv's only one) and this .pth: imports
from the entry go through a loader that never writes bytecode into it (a root agent's tasks
could, whatever the modes), and the entry's site-packages goes on sys.path after the run's
own, its own .pth files (distutils-precedence.pth, _virtualenv.pth, editable installs'
finders) processed as in any site directory. So:

  * imports, importlib.metadata and `pip list` see the entry's packages (they are on sys.path);
  * `pip install x` in the task installs into the run's site-packages (sys.prefix is the
    target), which comes first on sys.path: an upgraded package shadows the entry's, and pip
    leaves the entry's copy alone ("not uninstalling ..., outside environment"); uv pip
    looks only at the run's site-packages and installs the whole set there;
  * sys.prefix-relative data (share/, include/, etc/) is in the target, linked;
  * the entry stays sealed (sandbox/manifest.py: files and directories read-only) and Python
    writes no __pycache__ into it: bytecode comes from the entry's background compiler;
  * `python -S` (no site) sees none of the packages, as in any venv.

A run's venv is usable while its entry is held (EnvCache leases): prune never removes a held entry.
"""
from __future__ import annotations

import functools
import importlib.util
import marshal
import os
import stat
import sys
from pathlib import Path

from sandbox.linkfarm import LinkStats, link_tree

PTH_NAME, HOOK_NAME = "_shipyard_entry.pth", "_shipyard_overlay.py"
_HOOK_SOURCE = Path(__file__).with_name("overlay_hook.py")


def site_dirs(venv: Path) -> list[str]:
    """The venv's site-packages directories (relative), e.g. ["lib/python3.11/site-packages"];
    a lib64 symlink to lib (uv, virtualenv) is not a second one."""
    found = []
    for lib in ("lib", "lib64"):
        base = venv / lib
        if base.is_symlink() or not base.is_dir():
            continue
        for version in sorted(os.listdir(base)):
            site = base / version / "site-packages"
            if site.is_dir() and not site.is_symlink():
                found.append(f"{lib}/{version}/site-packages")
    return found


def make_overlay(venv: Path, target: Path, built_at: str, owner: tuple[int, int] | None = None,
                 cache_tag: str = "") -> LinkStats:
    """Make `target` (which must not exist) an overlay venv of the sealed `venv` built at `built_at`.

    `cache_tag`: the venv's interpreter's (e.g. "cpython-311"); when it is this Python's, the hook
    gets its bytecode too (unchecked-hash .pyc), so no task process compiles it at start."""
    sites = site_dirs(venv)
    stats = link_tree(venv, target, built_at, str(target), owner=owner, skip=sites)
    for site in sites:
        _write(target / site / HOOK_NAME, _hook_source(), owner)
        _write(target / site / PTH_NAME,
               f"import _shipyard_overlay; _shipyard_overlay.attach({str(venv)!r}, {str(venv / site)!r})\n", owner)
        if cache_tag and cache_tag == sys.implementation.cache_tag:
            (target / site / "__pycache__").mkdir()
            _write(target / site / "__pycache__" / f"_shipyard_overlay.{cache_tag}.pyc", _hook_bytecode(), owner)
            if owner is not None:
                os.chown(target / site / "__pycache__", *owner)
    return stats


@functools.lru_cache(maxsize=1)
def _hook_source() -> str:
    return _HOOK_SOURCE.read_text()


@functools.lru_cache(maxsize=1)
def _hook_bytecode() -> bytes:
    """The hook compiled by this interpreter, valid whatever the copy's mtime (PEP 552)."""
    source = _hook_source().encode()
    code = compile(source, HOOK_NAME, "exec", dont_inherit=True)
    return bytes(importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little")
                 + importlib.util.source_hash(source) + marshal.dumps(code))


def _write(path: Path, text: str | bytes, owner: tuple[int, int] | None) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    if owner is not None:
        os.chown(path, *owner)
