"""What a task process is started with: its command line and its environment."""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

_SDK_IMPORT = re.compile(r"^\s*(from\s+clearml(\.|\s)|import\s+clearml\b)", re.MULTILINE)
# Variables of the agent's own process that must not leak into a task.
_SCRUB_PREFIXES = ("SHIPYARD_", "CLEARML_", "TRAINS_", "VIRTUAL_ENV", "PYTHONHOME", "UV_")


@dataclass(frozen=True)
class Connection:
    api_server: str
    files_server: str
    web_server: str
    access_key: str
    secret_key: str
    worker_id: str


def uses_sdk(entry_point: Path, requirements: list[str]) -> bool:
    """Does the task attach to ClearML itself? Then the SDK applies hyperparameters."""
    if any(re.match(r"^\s*clearml\b", line) for line in requirements):
        return True
    try:
        return bool(_SDK_IMPORT.search(entry_point.read_text(errors="replace")))
    except OSError:
        return False


def args_from_hyperparams(task: dict) -> list[str]:
    """The Args section as `--name value` pairs, for scripts without the SDK."""
    section = (task.get("hyperparams") or {}).get("Args") or {}
    argv: list[str] = []
    for name, item in section.items():
        value = item.get("value") if isinstance(item, dict) else item
        if name.startswith("_") or value is None:
            continue
        flag = name if name.startswith("-") else f"--{name}"
        if str(item.get("type", "")).lower() in ("bool", "store_true") and str(value).lower() in ("true", "false"):
            if str(value).lower() == "true":
                argv.append(flag)
            continue
        argv += [flag, str(value)]
    return argv


def task_env_section(task: dict) -> dict[str, str]:
    section = (task.get("hyperparams") or {}).get("Environment") or {}
    return {name: str(item.get("value", "")) for name, item in section.items()
            if isinstance(item, dict) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name)}


def build_env(base: Mapping[str, str], conn: Connection, task_id: str, venv: Path,
              extra: Mapping[str, str] | None = None, task_vars: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(_SCRUB_PREFIXES)}
    env.update(task_vars or {})
    env.update(extra or {})
    env.update({
        "CLEARML_TASK_ID": task_id,
        "CLEARML_API_HOST": conn.api_server,
        "CLEARML_FILES_HOST": conn.files_server,
        "CLEARML_WEB_HOST": conn.web_server,
        "CLEARML_API_ACCESS_KEY": conn.access_key,
        "CLEARML_API_SECRET_KEY": conn.secret_key,
        "CLEARML_WORKER_ID": conn.worker_id,
        "CLEARML_LOG_TASK_TO_BACKEND": "0",   # the agent ships stdout; the SDK must not do it twice
        "CLEARML_PROC_MASTER_ID": f"{os.getpid()}:{task_id}",
        "VIRTUAL_ENV": str(venv),
        "PATH": f"{venv / 'bin'}{os.pathsep}{base.get('PATH', os.defpath)}",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def build_argv(python: Path, entry_point: Path, task: dict, with_args: bool) -> list[str]:
    script = (task.get("script") or {})
    if entry_point.suffix == ".sh":
        argv = ["bash", str(entry_point)]
    elif str(script.get("entry_point", "")).startswith("-m "):
        argv = [str(python), "-m", *shlex.split(script["entry_point"][3:])]
    else:
        argv = [str(python), str(entry_point)]
    return argv + (args_from_hyperparams(task) if with_args else [])
