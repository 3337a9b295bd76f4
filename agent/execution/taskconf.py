"""The clearml.conf a task's SDK reads: the agent's `sdk { ... }` section, and no agent key.

clearml-agent writes a configuration file per task and points CLEARML_CONFIG_FILE at it, so a
task run by an agent finds the storage settings it would find on a person's machine: storage
credentials (`sdk.aws.s3.*`, `sdk.google.storage.*`, `sdk.azure.storage.*`),
`sdk.development.default_output_uri` (where artifacts and models go), the rest of
`sdk.development.*`. Shipyard does the same with one difference: the file holds the servers'
addresses but never credentials for the API. The task's own key (agent/execution/taskkey.py)
reaches it through CLEARML_API_ACCESS_KEY/SECRET_KEY, and the agent's key stays with the agent.

    path = write_task_config(target, settings.sdk, connection, owner=(uid, gid) or None)
    env["CLEARML_CONFIG_FILE"] = str(path)          # or where `target` is mounted in a container

The file is JSON (valid HOCON), mode 0600, owned by the task's user when it has one. Its secret
values are masked in the console like every agent secret (Settings.secrets).

`default_output_uri(sdk)`: the SDK applies `sdk.development.default_output_uri` only in a task's
master process, and the agent starts the task as a child of its own (CLEARML_PROC_MASTER_ID names
the agent), so its SDK attaches as a subprocess and reads the destination from the task itself.
The runner therefore records the destination on a task that has none (`output.destination`),
before the task starts: what the SDK would have done, where every later reader sees it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.execution.taskenv import Connection

FILE_NAME = "clearml.conf"


def task_config(sdk: Mapping[str, Any], conn: Connection) -> dict[str, Any]:
    """The tree the task's SDK reads: where the servers are, and the agent's `sdk` section."""
    return {"api": {"api_server": conn.api_server, "web_server": conn.web_server,
                    "files_server": conn.files_server},
            "sdk": _plain(sdk)}


def write_task_config(target: Path, sdk: Mapping[str, Any], conn: Connection,
                      owner: tuple[int, int] | None = None) -> Path:
    """Write the task's clearml.conf into its run directory; its path on this machine."""
    path = target / FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(task_config(sdk, conn), out, indent=2)
        out.write("\n")
    if owner is not None:
        os.chown(path, *owner)
    return path


def default_output_uri(sdk: Mapping[str, Any]) -> str:
    """`sdk.development.default_output_uri`, or "" when unset."""
    development = sdk.get("development")
    value = development.get("default_output_uri") if isinstance(development, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


def _plain(node: Any) -> Any:
    """A HOCON tree (ordered dicts, lists) as plain JSON values."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node
