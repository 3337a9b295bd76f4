"""Interpreter selection and real venv builds with uv (and the virtualenv + pip fallback)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.pyenv import EnvBuilder, probe, select_interpreter, venv_python
from sandbox.requirements import parse_requirements
from shipyard.errors import InfrastructureError, RequirementsError

CURRENT = f"python{sys.version_info.major}.{sys.version_info.minor}"


def imports(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_probe_reports_the_base_interpreter():
    found = probe(sys.executable)
    assert found.version == ".".join(map(str, sys.version_info[:3]))
    assert found.path.is_absolute() and found.path.is_file()
    assert probe("/nonexistent/python3") is None


def test_the_running_interpreter_answers_for_itself_as_a_process_would(monkeypatch):
    from sandbox import pyenv

    st = Path(sys.executable).stat()
    asked = pyenv._probe_cached(sys.executable, st.st_size, st.st_mtime_ns)   # a process, as for any other

    def no_process(*args, **kwargs):
        raise AssertionError("probed with a process")

    monkeypatch.setattr(pyenv.subprocess, "run", no_process)
    assert probe(sys.executable) == asked
    assert probe(Path(sys.executable).resolve()) == asked


def test_selects_the_requested_binary():
    logged: list[str] = []
    found = select_interpreter(CURRENT, None, logged.append)
    assert found.short_version == CURRENT.removeprefix("python")
    assert logged and logged[0].startswith("using ")


def test_falls_back_to_the_current_interpreter_and_says_so():
    logged: list[str] = []
    found = select_interpreter("python2.0", "2.0.1", logged.append)
    assert found == probe(sys.executable)
    assert logged == [f"python2.0 requested but not installed here; using {found.path} (Python {found.version})"]


def test_header_version_is_used_when_no_binary():
    found = select_interpreter(None, f"{sys.version_info.major}.{sys.version_info.minor}.0", lambda _: None)
    assert found.short_version == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_non_python_binaries_are_ignored():
    logged: list[str] = []
    assert select_interpreter("/bin/bash", None, logged.append) == probe(sys.executable)
    assert logged == []


def test_uv_build_installs_pins_and_freezes(builder, tmp_path):
    python = probe(sys.executable)
    frozen = builder.build(python, parse_requirements("six==1.16.0"), tmp_path / "venv", print)
    assert "six==1.16.0" in frozen and any(line.startswith("pip==") for line in frozen)
    assert imports(venv_python(tmp_path / "venv"), "import six; print(six.__version__)") == "1.16.0"


def test_unresolvable_requirement(uv_cache_dir, tmp_path):
    builder = EnvBuilder(uv_cache_dir=uv_cache_dir, seed_pip=False)
    with pytest.raises(RequirementsError) as info:
        builder.build(probe(sys.executable), parse_requirements("six==1.16.0\nnosuchpkg==9.9"), tmp_path / "v", print)
    assert str(info.value).startswith("requirement 'nosuchpkg==9.9' cannot be installed: Because nosuchpkg")


def test_unreachable_index_is_infrastructure(uv_cache_dir, tmp_path):
    env = {"UV_INDEX_URL": "http://127.0.0.1:1/simple", "UV_HTTP_RETRIES": "0"}
    builder = EnvBuilder(uv_cache_dir=uv_cache_dir, seed_pip=False, env=env)
    with pytest.raises(InfrastructureError, match="could not reach the package index"):
        builder.build(probe(sys.executable), parse_requirements("idna==3.6"), tmp_path / "v", print)


def test_a_virtualenv_failure_says_why(tmp_path):
    """virtualenv reports on stdout; the error must still carry its reason, not "no reason"."""
    interpreter = dataclasses.replace(probe(sys.executable), path=tmp_path / "gone" / "python3")
    builder = EnvBuilder(uv=Path("/nonexistent/uv"))
    with pytest.raises(InfrastructureError, match="failed to find interpreter"):
        builder.build(interpreter, parse_requirements(""), tmp_path / "v", print)


def test_falls_back_to_virtualenv_and_pip_without_uv(tmp_path):
    logged: list[str] = []
    builder = EnvBuilder(uv=Path("/nonexistent/uv"))
    frozen = builder.build(probe(sys.executable), parse_requirements("six==1.16.0"), tmp_path / "v", logged.append)
    assert "six==1.16.0" in frozen
    assert "uv not available; building the environment with virtualenv + pip" in logged
    assert imports(venv_python(tmp_path / "v"), "import six; print(six.__version__)") == "1.16.0"
