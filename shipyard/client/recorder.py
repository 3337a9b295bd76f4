"""Record a local script as a task, the way the clearml SDK would: repository, branch, commit,
uncommitted diff, entry point, working dir and requirements."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shipyard.errors import ConfigError


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def record_local_script(script: Path, working_dir: Path | None = None) -> dict:
    """The `script` section for a local file, inside a git repository or not."""
    script = script.resolve()
    if not script.is_file():
        raise ConfigError(f"script not found: {script}")
    root_text = _git(script.parent, "rev-parse", "--show-toplevel")
    binary = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not root_text:  # no repository: the whole script travels as the "diff" (ClearML convention)
        return {"repository": "", "entry_point": script.name, "working_dir": ".", "binary": binary,
                "diff": script.read_text(), "requirements": _requirements(script.parent)}
    root = Path(root_text)
    remote = _git(root, "config", "--get", "remote.origin.url") or str(root)
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        raise ConfigError(f"the repository {root} has no commit yet; commit the script first")
    cwd = (working_dir or script.parent).resolve()
    return {
        "repository": remote, "branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD"),
        "version_num": commit, "entry_point": str(script.relative_to(cwd)) if script.is_relative_to(cwd)
        else str(script.relative_to(root)),
        "working_dir": str(cwd.relative_to(root)) if cwd.is_relative_to(root) else ".",
        "diff": _diff(root, script), "binary": binary, "requirements": _requirements(cwd, root),
    }


def _diff(root: Path, script: Path) -> str:
    tracked = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=root, capture_output=True, text=True).stdout
    untracked = _git(root, "ls-files", "--others", "--exclude-standard").splitlines()
    extra = []
    entry = str(script.relative_to(root))
    for name in [n for n in untracked if n == entry]:  # an uncommitted entry point travels in the diff
        proc = subprocess.run(["git", "diff", "--no-index", "--binary", "/dev/null", name], cwd=root,
                              capture_output=True, text=True)
        extra.append(proc.stdout)
    return tracked + "".join(extra)


def _requirements(*dirs: Path) -> dict:
    for directory in dirs:
        path = directory / "requirements.txt"
        if path.is_file():
            return {"pip": path.read_text()}
    return {}


def record_remote(repository: str, script: str, *, branch: str | None = None, commit: str | None = None,
                  working_dir: str = ".") -> dict:
    return {"repository": repository, "branch": branch or "", "version_num": commit or "",
            "entry_point": script, "working_dir": working_dir, "diff": ""}


def args_to_hyperparams(pairs: list[str], section: str = "Args") -> dict:
    params: dict = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"expected name=value, got '{pair}'")
        sec, _, key = name.rpartition("/")
        sec = sec or section
        params.setdefault(sec, {})[key] = {"section": sec, "name": key, "value": value}
    return params
