"""Applying a task's recorded uncommitted changes (`script.diff`) to its working copy.

ClearML stores two different things in `script.diff`: a unified diff of uncommitted changes
when the task has a repository, or the whole script text when it has none. `looks_like_patch`
tells them apart; `apply_diff` applies a patch with `git apply`, then `git apply --3way`.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sandbox.gitcmd import GitRunner, git_reason
from shipyard.errors import WorkspaceError

_PATCH_STARTS = ("diff ", "--- ", "Index: ", "submodule ")

_FAILED_FILE_PATTERNS = (
    re.compile(r"^error: patch failed: (.+):\d+$", re.MULTILINE),
    re.compile(
        r"^error: (.+?): (?:patch does not apply|No such file or directory|does not exist in index"
        r"|does not match index|already exists in (?:working directory|index))$",
        re.MULTILINE,
    ),
    re.compile(r"^Applied patch to '(.+)' with conflicts\.$", re.MULTILINE),
    re.compile(r"^U (.+)$", re.MULTILINE),
)


def looks_like_patch(text: str) -> bool:
    """True when `text` is a diff rather than a literal script."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.startswith(_PATCH_STARTS)


def failed_files(stderr: str) -> list[str]:
    """The files `git apply` names as failing, in order of first mention."""
    names: dict[str, None] = {}
    for pattern in _FAILED_FILE_PATTERNS:
        for match in pattern.finditer(stderr):
            names.setdefault(match.group(1).strip(), None)
    return list(names)


def apply_diff(root: Path, diff: str, git: GitRunner, log: Callable[[str], None]) -> None:
    """Apply `diff` to the working copy at `root`, or raise WorkspaceError naming the files."""
    if not diff.endswith("\n"):
        diff += "\n"
    plain = git.run(["apply", "--whitespace=nowarn", "-"], cwd=root, stdin=diff)
    if plain.returncode == 0:
        log("applied the task's uncommitted changes")
        return
    log("git apply failed; retrying with a three-way merge")
    merged = git.run(["apply", "--3way", "--whitespace=nowarn", "-"], cwd=root, stdin=diff)
    if merged.returncode == 0:
        log("applied the task's uncommitted changes with a three-way merge")
        return
    raise WorkspaceError(_failure_message(plain.stderr + "\n" + merged.stderr), kind="diff_failed")


def _failure_message(stderr: str) -> str:
    files = failed_files(stderr)
    reason = git_reason(stderr)
    if not files:
        return f"the task's uncommitted changes (script.diff) could not be applied: {reason}"
    return (
        f"the task's uncommitted changes (script.diff) do not apply to {', '.join(files)}: {reason}; "
        "the diff was probably recorded against a different commit or those files changed"
    )
