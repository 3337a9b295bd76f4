"""Reading uv's and pip's failure output: whose fault is it, and what should a person see?

    classify(output) -> "auth" | "network" | "resolution" | "other"
    requirements_error(output, requirements) -> RequirementsError naming the offending lines

Pure functions over text, so they are table-tested against real installer output.
"""
from __future__ import annotations

import re
from typing import Literal

from sandbox.requirements import RequirementSet
from shipyard.errors import InfrastructureError, RequirementsError

Failure = Literal["auth", "network", "resolution", "other"]

AUTH_MARKERS = (
    "401 unauthorized",
    "403 forbidden",
    "401 client error",
    "403 client error",
    "missing credentials",
    "user credentials were not found",
)

NETWORK_MARKERS = (
    "error sending request",
    "dns error",
    "failed to lookup address",
    "name or service not known",
    "temporary failure in name resolution",
    "tcp connect error",
    "connection refused",
    "connection reset",
    "network is unreachable",
    "no route to host",
    "operation timed out",
    "read timed out",
    "failed to establish a new connection",
    "newconnectionerror",
    "could not resolve host",
    "failed to connect to",
    "request failed after",
)

RESOLUTION_MARKERS = (
    "no solution found when resolving",
    "not found in the package registry",
    "there is no version of",
    "are unsatisfiable",
    "no matching distribution found",
    "could not find a version that satisfies",
    "resolutionimpossible",
    "conflicting dependencies",
    "failed to build",
    "failed to download and build",
    "failed to parse",
    "is not a valid",
    "invalid requirement",
    "does not match the metadata",
    "has no wheels with a matching",
    "hash mismatch",  # a locked digest that the downloaded file does not have (uv)
    "do not match the hashes",  # the same, pip's words
    "must have a hash",  # --require-hashes with an unhashed line
    "in --require-hashes mode",  # pip: a hash-checked file with an unhashed line
    "needs to be updated",  # uv: the lock does not match pyproject.toml (--locked)
)

_DECORATION = re.compile(r"^[\s×╰├│─▶]+")
_PREFIX = re.compile(r"^(?:error|cause|ERROR|Caused by)\s*:\s*", re.IGNORECASE)


def classify(output: str) -> Failure:
    """Refused credentials, then network: a resolver that cannot read the index also says it found nothing."""
    lowered = output.lower()
    if any(marker in lowered for marker in AUTH_MARKERS):
        return "auth"
    if any(marker in lowered for marker in NETWORK_MARKERS):
        return "network"
    if any(marker in lowered for marker in RESOLUTION_MARKERS):
        return "resolution"
    return "other"


def key_lines(output: str, limit: int = 6) -> list[str]:
    """The error and cause lines of an installer's output, without decoration or prefixes."""
    picked: list[str] = []
    for raw in output.splitlines():
        line = _DECORATION.sub("", raw).strip()
        if _PREFIX.match(line) or raw.lstrip().startswith(("×", "╰", "├")):
            text = _PREFIX.sub("", line).strip()
            if text and text not in picked:
                picked.append(text)
    if not picked:
        picked = [line.strip() for line in output.splitlines() if line.strip()][-3:]
    return picked[:limit]


def tail(output: str, limit: int = 30) -> list[str]:
    """The installer's last lines as it wrote them (blank lines dropped), for the task's console."""
    return [line.rstrip() for line in output.splitlines() if line.strip()][-limit:]


def reason(output: str) -> str:
    """One line: the most specific cause (uv puts it last), or every key line when short."""
    lines = key_lines(output)
    causes = [line for line in lines if line.lower().startswith("because")]
    return causes[-1] if causes else "; ".join(lines) or "the installer gave no reason"


def offending(output: str, requirements: RequirementSet) -> list[str]:
    """The requirement lines whose project name the installer's output mentions."""
    lowered = output.lower()
    found: list[str] = []
    for req in requirements.requirements:
        if req.name and _mentions(lowered, req.name):
            found.append(req.line)
    return found


def requirements_error(output: str, requirements: RequirementSet) -> RequirementsError:
    why = reason(output)
    lines = offending(output, requirements)
    if len(lines) == 1:
        return RequirementsError(f"requirement '{lines[0]}' cannot be installed: {why}")
    if lines:
        quoted = ", ".join(f"'{line}'" for line in lines)
        return RequirementsError(f"requirements {quoted} cannot be installed together: {why}")
    return RequirementsError(f"the task's requirements cannot be installed: {why}")


def network_error(output: str) -> InfrastructureError:
    return InfrastructureError(
        f"could not reach the package index while installing requirements: {reason(output)}",
        kind="package_index_unreachable",
    )


def auth_error(output: str) -> RequirementsError:
    """An index refused the credentials (or asked for some): not retried, a person must fix them."""
    return RequirementsError(
        f"a package index refused access (check its credentials in the agent's configuration: "
        f"agent.package_manager.extra_index_url, shipyard.index_credentials): {_auth_line(output)}"
    )


def _auth_line(output: str) -> str:
    """The installer's own line about the refusal (uv: a hint after its resolver error)."""
    for raw in output.splitlines():
        line = _PREFIX.sub("", _DECORATION.sub("", raw).strip())
        if any(marker in line.lower() for marker in AUTH_MARKERS):
            return re.sub(r"^hint:\s*", "", line)
    return reason(output)


def _mentions(text: str, name: str) -> bool:
    spelled = "[-_.]".join(re.escape(part) for part in re.split(r"[-_.]", name))
    return re.search(rf"(?<![\w.-]){spelled}(?![\w-])", text) is not None
