"""Parsing and normalizing a task's Python requirements (ClearML's `script.requirements.pip`).

The recorded text looks like `pip freeze` output with a header the SDK adds:

    # Python 3.11.7 (main, Dec  4 2023, 18:10:11) [GCC 12.2.0]

    clearml == 2.1.12
    numpy==1.26.4
    mylib @ file:///home/me/mylib-0.1-py3-none-any.whl

`parse_requirements` turns it into a `RequirementSet`: the lines to install, the Python
version hint from the header, and a canonical text (sorted, PEP 503 names, no whitespace,
no comments) that two equivalent recordings share, used as the environment cache key.
Everything here is pure, except `find_repo_requirements`, which reads the repository.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as PackagingRequirement
from packaging.utils import canonicalize_name

from shipyard.errors import RequirementsError

try:
    import tomllib  # type: ignore[import-not-found, unused-ignore]  # stdlib from 3.11; mypy checks as 3.10
except ModuleNotFoundError:  # Python 3.10: pyproject.toml dependencies are not read
    tomllib = None  # type: ignore[assignment, unused-ignore]  # a module name rebound to None on 3.10


class Kind(str, Enum):
    NAMED = "named"  # numpy==1.26.4, foo[bar]>=1; python_version<"3.12"
    DIRECT = "direct"  # foo @ https://.../foo.whl, foo @ file:///..., foo @ git+https://...
    EDITABLE = "editable"  # -e ./lib, -e git+https://...#egg=foo
    VCS = "vcs"  # git+https://host/org/repo.git@v1#egg=foo
    URL = "url"  # https://host/foo-1.0-py3-none-any.whl, ./wheels/foo.whl, /opt/src/foo
    OPTION = "option"  # --extra-index-url URL, --index-url URL, --find-links DIR, --pre
    INCLUDE = "include"  # -r other.txt, -c constraints.txt


OPTION_ALIASES = {
    "-i": "--index-url",
    "-f": "--find-links",
    "-r": "--requirement",
    "-c": "--constraint",
    "-e": "--editable",
}
INCLUDE_OPTIONS = ("--requirement", "--constraint")
FLAG_OPTIONS = ("--pre", "--no-index", "--prefer-binary", "--require-hashes")
VCS_PREFIXES = ("git+", "hg+", "svn+", "bzr+")
ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".zip", ".tar.bz2")

_HEADER = re.compile(r"^#\s*Python\s+(\d+\.\d+(?:\.\d+)?)\b", re.IGNORECASE)
_INLINE_COMMENT = re.compile(r"\s+#.*$")
_DIRECT_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*@")
_PINNED_VCS = re.compile(r"@[0-9a-f]{40}(?:#|$)")
_HASH_OPTION = re.compile(r"\s+--hash[=\s]+([A-Za-z0-9]+:[0-9A-Fa-f]+)")


@dataclass(frozen=True)
class Requirement:
    kind: Kind
    line: str
    """What gets installed: the line as written, whitespace trimmed."""
    canonical: str
    """The normalized spelling used for hashing."""
    name: str | None = None
    """PEP 503 normalized project name, when the line names one."""
    url: str | None = None
    hashes: tuple[str, ...] = ()
    """`sha256:<hex>` digests the file installed must match (`--hash` options of a locked line)."""


@dataclass(frozen=True)
class RequirementSet:
    requirements: tuple[Requirement, ...] = ()
    python_hint: str | None = None
    """The interpreter version the task was recorded with (from the `# Python x.y.z` header)."""

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def canonical(self) -> str:
        return "\n".join(sorted({r.canonical for r in self.requirements}))

    def install_lines(self) -> list[str]:
        """Options first (pip and uv want index options before packages), then packages."""
        options = [r.line for r in self.requirements if r.kind in (Kind.OPTION, Kind.INCLUDE)]
        packages = [r.line for r in self.requirements if r.kind not in (Kind.OPTION, Kind.INCLUDE)]
        return options + packages

    def hashed(self) -> bool:
        """True when every package line carries `--hash` (pip's and uv's hash-checking mode)."""
        packages = [r for r in self.requirements if r.kind not in (Kind.OPTION, Kind.INCLUDE)]
        return bool(packages) and all(r.hashes for r in packages)

    def find(self, name: str) -> Requirement | None:
        wanted = canonicalize_name(name)
        return next((r for r in self.requirements if r.name == wanted), None)

    def uncacheable_reason(self) -> str | None:
        """Why an environment built from this set must not be shared, or None if it may be."""
        for req in self.requirements:
            reason = _uncacheable(req)
            if reason:
                return f"'{req.line}' {reason}"
        return None

    def without_missing_local_files(self, exists: Callable[[str], bool]) -> tuple[RequirementSet, list[str]]:
        """Replace `name @ file:///...` lines whose file is absent here by the bare name.

        The SDK records such lines for packages installed from local builds (conda, wheels
        built on the user's machine); on an agent the path rarely exists.
        """
        kept: list[Requirement] = []
        replaced: list[str] = []
        for req in self.requirements:
            path = _local_path(req.url) if req.kind is Kind.DIRECT and req.name else None
            if path is not None and not exists(path):
                kept.append(Requirement(Kind.NAMED, req.name or "", req.name or "", req.name))
                replaced.append(req.line)
            else:
                kept.append(req)
        return replace(self, requirements=tuple(kept)), replaced


def from_script(script: Mapping[str, Any]) -> RequirementSet:
    """The pip requirements recorded in a ClearML `script` object (empty if none)."""
    recorded = script.get("requirements") or {}
    return parse_requirements(recorded.get("pip") if isinstance(recorded, Mapping) else None)


def parse_requirements(pip: str | Sequence[str] | None) -> RequirementSet:
    """Parse a requirements text (or list of lines); raise RequirementsError on a bad line."""
    text = pip if isinstance(pip, str) else "\n".join(pip or ())
    text = re.sub(r"\\\r?\n", " ", text)  # line continuations
    hint: str | None = None
    parsed: list[Requirement] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw.strip())
        if header and hint is None:
            hint = header.group(1)
            continue
        line = _INLINE_COMMENT.sub("", raw).strip()
        if line and not line.startswith("#"):
            parsed.append(_parse_line(line, number))
    return RequirementSet(tuple(parsed), hint)


def parse_line(line: str) -> Requirement:
    return _parse_line(line.strip(), 1)


def _parse_line(line: str, number: int) -> Requirement:
    hashes = tuple(_HASH_OPTION.findall(line))
    if hashes and not line.startswith("-"):
        return _with_hashes(_parse_line(_HASH_OPTION.sub("", line).strip(), number), hashes)
    if line.startswith("-"):
        return _parse_option(line, number)
    if not _DIRECT_REFERENCE.match(line):
        if line.startswith(VCS_PREFIXES):
            return Requirement(Kind.VCS, line, line, _egg_name(line), url=line)
        if "://" in line or line.startswith((".", "/", "~")) or line.endswith(ARCHIVE_SUFFIXES):
            return Requirement(Kind.URL, line, line, _egg_name(line), url=line)
    try:
        req = PackagingRequirement(line)
    except InvalidRequirement as exc:
        raise RequirementsError(f"requirement line {number} '{line}' is not valid: {exc}") from None
    return _from_packaging(req, line)


def _from_packaging(req: PackagingRequirement, line: str) -> Requirement:
    name = canonicalize_name(req.name)
    extras = f"[{','.join(sorted(canonicalize_name(e) for e in req.extras))}]" if req.extras else ""
    marker = f"; {req.marker}" if req.marker else ""
    if req.url:
        return Requirement(Kind.DIRECT, line, f"{name}{extras} @ {req.url}{marker}", name, req.url)
    return Requirement(Kind.NAMED, line, f"{name}{extras}{req.specifier}{marker}", name)


def _with_hashes(req: Requirement, hashes: tuple[str, ...]) -> Requirement:
    """A locked line: its hashes belong to what is installed and to the cache key."""
    line = req.line + "".join(f" --hash={h}" for h in hashes)
    canonical = req.canonical + "".join(f" --hash={h.lower()}" for h in sorted(hashes))
    return replace(req, line=line, canonical=canonical, hashes=hashes)


def _parse_option(line: str, number: int) -> Requirement:
    option, value = split_option(line)
    if option == "--editable":
        return Requirement(Kind.EDITABLE, f"-e {value}", f"-e {value}", _egg_name(value), url=value)
    if not value and option not in FLAG_OPTIONS:
        raise RequirementsError(f"requirement line {number} '{line}': option {option} needs a value")
    normalized = f"{option} {value}".strip()
    kind = Kind.INCLUDE if option in INCLUDE_OPTIONS else Kind.OPTION
    return Requirement(kind, normalized, normalized)


def split_option(line: str) -> tuple[str, str]:
    """`-r a.txt`, `-ra.txt`, `--requirement=a.txt` -> ('--requirement', 'a.txt')."""
    head, _, rest = line.strip().partition(" ")
    if head.startswith("--") and "=" in head:
        head, _, value = head.partition("=")
        rest = f"{value} {rest}"
    elif not head.startswith("--") and len(head) > 2:
        head, rest = head[:2], f"{head[2:]} {rest}"
    return OPTION_ALIASES.get(head, head), rest.strip()


def _egg_name(url: str) -> str | None:
    match = re.search(r"[#&]egg=([A-Za-z0-9._-]+)", url)
    return canonicalize_name(match.group(1)) if match else None


def _local_path(url: str | None) -> str | None:
    if not url:
        return None
    if url.startswith("file://"):
        return unquote(urlsplit(url).path)
    return None if "://" in url else url


def _uncacheable(req: Requirement) -> str | None:
    if req.kind is Kind.INCLUDE:
        return "refers to another file whose content is not part of the task"
    if req.kind is Kind.EDITABLE:
        return "is an editable install that points at a source tree"
    if _local_path(req.url) is not None:
        return "installs from a local path whose content may change"
    vcs = req.url and (req.url.startswith(VCS_PREFIXES) or "+" in req.url.split("://")[0])
    if vcs and not _PINNED_VCS.search(req.url or ""):
        return "is a VCS requirement not pinned to a full commit id"
    return None


@dataclass(frozen=True)
class FoundRequirements:
    source: Path
    requirements: RequirementSet


def find_repo_requirements(working_dir: Path, repo_root: Path) -> FoundRequirements | None:
    """Requirements from the repository, for a task that recorded none.

    Looks for requirements.txt in the working dir, then the repository root; then
    pyproject.toml's [project].dependencies in the same two places.
    """
    places = list(dict.fromkeys([Path(working_dir), Path(repo_root)]))
    for directory in places:
        candidate = directory / "requirements.txt"
        if candidate.is_file():
            text = "\n".join(read_requirements_file(candidate, seen=set()))
            return FoundRequirements(candidate, parse_requirements(text))
    for directory in places:
        candidate = directory / "pyproject.toml"
        dependencies = pyproject_dependencies(candidate) if candidate.is_file() else None
        if dependencies:
            return FoundRequirements(candidate, parse_requirements(dependencies))
    return None


def read_requirements_file(path: Path, seen: set[Path]) -> list[str]:
    """The lines of a repository requirements file with `-r` inlined and relative paths made absolute."""
    path = path.resolve()
    if path in seen:
        return []
    if not path.is_file():
        raise RequirementsError(f"requirements file {path} (included with -r) does not exist")
    seen.add(path)
    lines: list[str] = []
    for raw in path.read_text(errors="replace").splitlines():
        line = _INLINE_COMMENT.sub("", raw).strip()
        option, value = split_option(line) if line.startswith("-") else ("", "")
        if option == "--requirement":
            lines += read_requirements_file(path.parent / value, seen)
        elif option in ("--constraint", "--editable") and value.startswith("."):
            lines.append(f"{option} {(path.parent / value).resolve()}")
        else:
            lines.append(raw)
    return lines


def pyproject_dependencies(path: Path) -> list[str] | None:
    if tomllib is None:
        return None
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RequirementsError(f"{path} is not valid TOML: {exc}") from None
    dependencies = data.get("project", {}).get("dependencies")
    return [str(d) for d in dependencies] if isinstance(dependencies, list) else None
