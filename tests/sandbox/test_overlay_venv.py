"""Overlay venvs (sandbox/overlay.py) and the exposure invariant (sandbox/exposure.py), with real
venvs: what a task sees of its environment, what it may change, and that no run is handed an
entry a task could have changed since it was last verified."""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sandbox import manifest
from sandbox.env_cache import EnvCache
from sandbox.pyenv import probe
from tests.package_index import PackageIndex

PYTHON = probe(sys.executable)
SITE = f"lib/python{PYTHON.short_version}/site-packages"


def _wheel(directory: Path, version: str) -> None:
    """`ovl-pkg`: a module, a console script, a .pth file and data installed under sys.prefix/share."""
    dist, data = f"ovl_pkg-{version}.dist-info", f"ovl_pkg-{version}.data"
    files = {
        "ovl_pkg/__init__.py": f"import sys\n__version__ = '{version}'\n\ndef main():\n    print('tool', sys.prefix)\n",
        "ovl-hook.pth": "import os; os.environ['OVL_PTH'] = 'processed'\n",
        f"{data}/data/share/ovl/hello.txt": "hello from share\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: ovl-pkg\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: shipyard-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[console_scripts]\novl-tool = ovl_pkg:main\n",
    }
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(t.encode())}" for p, t in files.items()]
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / f"ovl_pkg-{version}-py3-none-any.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


def run(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def index(tmp_path):
    served = PackageIndex(tmp_path / "index")
    for version in ("1.0", "2.0"):
        _wheel(served.root / "pub" / "ovl-pkg", version)
    yield served.start()
    served.stop()


def test_a_run_sees_the_entry_and_installs_into_its_own_layer(builder, index, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=builder, compile_bytecode="off")
    requirements = f"--index-url {index.url('pub')}\novl-pkg==1.0\n"
    first = cache.materialize(requirements, PYTHON, tmp_path / "t1", log=print)
    entry = cache.root / "entries" / first.key / "venv"
    target = tmp_path / "t1"
    # The entry's console script, .pth file, metadata and sys.prefix data are the run's
    assert subprocess.run([str(target / "bin" / "ovl-tool")], capture_output=True, text=True,
                          check=True).stdout.strip() == f"tool {target}"
    assert run(first.python, "import os; print(os.environ.get('OVL_PTH'))") == "processed"
    assert run(first.python, "import importlib.metadata as m; print(m.version('ovl-pkg'))") == "1.0"
    assert (target / "share" / "ovl" / "hello.txt").read_text() == "hello from share\n"
    # When the task upgrades the package with pip, it goes into the run's own site-packages
    pip = subprocess.run([str(first.python), "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                          "--index-url", index.url("pub"), "ovl-pkg==2.0"], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert run(first.python, "import ovl_pkg; print(ovl_pkg.__version__, ovl_pkg.__file__)") == \
        f"2.0 {target / SITE / 'ovl_pkg' / '__init__.py'}"
    # and the entry keeps its own: the run ends, the entry verifies clean and is reused as it was
    assert (entry / SITE / "ovl_pkg-1.0.dist-info").is_dir()
    first.lease.close()
    again = cache.materialize(requirements, PYTHON, tmp_path / "t2", log=print)
    assert again.cache_hit and run(again.python, "import ovl_pkg; print(ovl_pkg.__version__)") == "1.0"
    again.lease.close()


ATTACK = """
import os, six
os.chmod(six.__file__, 0o644)               # sealed read-only: a determined task chmods first
with open(six.__file__, "a") as handle:
    handle.write("\\nprint('PWNED')\\n")
print("planted")
"""


def test_a_task_that_rewrites_its_environment_leaves_the_next_run_a_clean_one(light_builder, tmp_path, caplog):
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    attacker = cache.materialize("six==1.16.0", PYTHON, tmp_path / "a", log=print)
    assert run(attacker.python, ATTACK) == "planted"
    # When the attacker's run ends, the entry is verified, found changed and discarded
    with caplog.at_level(logging.WARNING, logger="shipyard.sandbox.env_cache"):
        attacker.lease.close()
    assert "site-packages/six.py" in caplog.text and "was changed after it was built" in caplog.text
    # Then the next run gets a rebuilt entry, told which file was changed
    logged: list[str] = []
    victim = cache.materialize("six==1.16.0", PYTHON, tmp_path / "v", log=logged.append)
    assert not victim.cache_hit and light_builder.calls == 2
    assert any(line.startswith("WARNING:") and f"{SITE}/six.py" in line for line in logged)
    assert "PWNED" not in run(victim.python, "import six; print(six.__version__)")
    victim.lease.close()


def test_a_task_that_changes_another_entry_is_caught_at_its_next_hand_over(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    other = cache.materialize("idna==3.7", PYTHON, tmp_path / "o", log=print)
    other.lease.close()
    # Given a run of another environment whose task writes into the idna entry it can find
    attacker = cache.materialize("six==1.16.0", PYTHON, tmp_path / "a", log=print)
    idna = cache.root / "entries" / other.key / "venv" / SITE / "idna" / "__init__.py"
    idna.chmod(0o644)
    with idna.open("a") as handle:
        handle.write("\nprint('PWNED')\n")
    attacker.lease.close()
    # When the idna environment is asked for, it is checked (a task could have changed it) and rebuilt
    logged: list[str] = []
    victim = cache.materialize("idna==3.7", PYTHON, tmp_path / "v", log=logged.append)
    assert not victim.cache_hit
    assert any("was changed after it was built" in line and f"{SITE}/idna/__init__.py" in line for line in logged)
    victim.lease.close()


def test_only_a_hand_over_a_task_could_have_affected_is_checked(light_builder, tmp_path, monkeypatch):
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    first = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
    checks: list[Path] = []
    real_verify = manifest.verify

    def counting(root, *args):
        checks.append(root)
        return real_verify(root, *args)

    monkeypatch.setattr(manifest, "verify", counting)
    first.lease.close()                                    # the run ended: its entry is checked once
    assert len(checks) == 1
    # A hand-over after a clean check, with no exposed run since, checks nothing
    second = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t2", log=print)
    assert second.cache_hit and len(checks) == 1
    # While that run (its task could write the cache) is alive, another hand-over checks in full
    third = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t3", log=print)
    assert third.cache_hit and len(checks) == 2
    # and a run whose task runs as a user of its own (owner=) neither needs a check nor counts as exposed
    for lease in (second.lease, third.lease):
        lease.close()
    generation, seen = cache.exposures.generation(), len(checks)
    owned = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t4", log=print, owner=(os.getuid(), os.getgid()))
    assert owned.cache_hit and cache.exposures.generation() == generation and len(checks) == seen
    owned.lease.close()
    assert len(checks) == seen


def test_standalone_venvs_outlive_the_entry_and_uncached_runs_count_as_exposed(light_builder, tmp_path):
    cache = EnvCache(tmp_path / "cache", builder=light_builder, compile_bytecode="off")
    built = cache.materialize("six==1.16.0", PYTHON, tmp_path / "t1", log=print)
    built.lease.close()
    generation = cache.exposures.generation()
    # `shipyard build`: a checked link farm that needs no lease and keeps working once evicted
    lines: list[str] = []
    kept = cache.materialize("six==1.16.0", PYTHON, tmp_path / "kept", log=lines.append, standalone=True)
    assert kept.cache_hit and kept.lease is None and cache.exposures.generation() == generation
    assert any("linked (standalone)" in line for line in lines)
    assert cache.prune(0, log=print) == [built.key]
    assert run(kept.python, "import six; print(six.__file__)") == str(tmp_path / "kept" / SITE / "six.py")
    # A run whose environment is not cached still runs a task that could write the cache
    (tmp_path / "base.txt").write_text("six==1.16.0\n")
    uncached = cache.materialize(f"-r {tmp_path / 'base.txt'}", PYTHON, tmp_path / "u", log=print)
    assert uncached.key == "" and cache.exposures.generation() == generation + 1
    uncached.lease.close()
