"""Classifying installer failures, over output captured from real uv and pip runs."""
# ruff: noqa: E501  (installer output below is kept verbatim)
from __future__ import annotations

import pytest

from sandbox import install_errors
from sandbox.requirements import parse_requirements
from shipyard.errors import InfrastructureError

UV_NOT_FOUND = """Using Python 3.11.7 environment at: venv
error: No solution found when resolving dependencies
  cause: Because nosuchpkg was not found in the package registry and you require nosuchpkg==9.9, we can conclude that your requirements are unsatisfiable.
"""
UV_TTY_CONFLICT = """  × No solution found when resolving dependencies:
  ╰─▶ Because alpha-pkg==1.0 depends on beta<2 and you require beta==3.0, we can conclude that alpha-pkg==1.0 and beta==3.0 are incompatible.
"""
UV_REFUSED = """error: Request failed after 3 retries in 9.5s
  cause: Failed to fetch: http://127.0.0.1:1/simple/idna/
  cause: error sending request for url (http://127.0.0.1:1/simple/idna/)
  cause: tcp connect error
  cause: Connection refused (os error 111)
"""
UV_DNS = """error: Failed to fetch: https://nonexistent.invalid/simple/idna/
  cause: dns error
  cause: failed to lookup address information: Name or service not known
"""
PIP_NOT_FOUND = """ERROR: Could not find a version that satisfies the requirement nosuchpkg==9.9 (from versions: none)
ERROR: No matching distribution found for nosuchpkg==9.9
"""
UV_PANIC = "thread 'main' panicked at crates/uv/src/lib.rs:1:1:\nsomething odd\n"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (UV_NOT_FOUND, "resolution"),
        (UV_TTY_CONFLICT, "resolution"),
        (UV_REFUSED, "network"),
        (UV_DNS, "network"),
        (PIP_NOT_FOUND, "resolution"),
        (UV_PANIC, "other"),
    ],
)
def test_classify(output, expected):
    assert install_errors.classify(output) == expected


def test_single_offending_requirement():
    reqs = parse_requirements("six==1.16.0\nnosuchpkg==9.9\n")
    error = install_errors.requirements_error(UV_NOT_FOUND, reqs)
    assert str(error) == (
        "requirement 'nosuchpkg==9.9' cannot be installed: Because nosuchpkg was not found in the package "
        "registry and you require nosuchpkg==9.9, we can conclude that your requirements are unsatisfiable."
    )


def test_conflicting_requirements_in_tty_format():
    reqs = parse_requirements("alpha_pkg==1.0\nbeta==3.0\nsix\n")
    message = str(install_errors.requirements_error(UV_TTY_CONFLICT, reqs))
    assert message.startswith("requirements 'alpha_pkg==1.0', 'beta==3.0' cannot be installed together: Because")


def test_pip_output_and_unnamed_failures():
    reqs = parse_requirements("nosuchpkg==9.9")
    assert "requirement 'nosuchpkg==9.9' cannot be installed: Could not find a version" in str(
        install_errors.requirements_error(PIP_NOT_FOUND, reqs)
    )
    assert str(install_errors.requirements_error("boom\n", parse_requirements("six"))).startswith(
        "the task's requirements cannot be installed: boom"
    )


def test_network_error_is_infrastructure():
    error = install_errors.network_error(UV_REFUSED)
    assert isinstance(error, InfrastructureError)
    assert "could not reach the package index" in str(error) and "Connection refused" in str(error)
