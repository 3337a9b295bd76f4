"""Machines as local processes: each "instance" is a `shipyard daemon` in its own process group,
with its own work directory and its own short-lived key (autoscaling on one box, and the
end-to-end test). Drain is SIGTERM to the group (the agent takes nothing new); terminate is
SIGTERM, `stop_grace_s`, then SIGKILL. The pids are kept in `instances.json` so a restarted
autoscaler still finds (and can stop) the agents it started.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from autoscaler.config import AutoscalerConfig
from autoscaler.model import Market
from autoscaler.provider import RUNNING, TERMINATED, CloudProvider, InstanceInfo, LaunchRequest, ProviderError


class LocalProvider(CloudProvider):
    name = "local"

    def __init__(self, work_dir: Path, *, python: str = "", stop_grace_s: float = 10.0):
        self.work_dir = Path(work_dir).expanduser()
        self.python = python or sys.executable
        self.stop_grace_s = stop_grace_s
        self._children: dict[str, subprocess.Popen] = {}
        self._registry = self.work_dir / "instances.json"
        self._known: dict[str, dict] = self._load()

    @classmethod
    def from_config(cls, config: AutoscalerConfig) -> LocalProvider:
        local = config.local
        return cls(local.work_dir, python=local.python, stop_grace_s=local.stop_grace_s)

    def launch(self, request: LaunchRequest) -> InstanceInfo:
        instance_id = f"local-{request.label.rsplit('-', 1)[-1]}"
        home = self.work_dir / instance_id
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SHIPYARD_"))}
        env.update({"SHIPYARD_WORK_DIR": str(home / "work"), "SHIPYARD_CACHE_DIR": str(self.work_dir / "cache")})
        env.update(request.bootstrap.env())
        argv = [self.python, "-m", "shipyard", *request.bootstrap.daemon_args()]
        try:
            with open(home / "agent.log", "ab") as log:
                child = subprocess.Popen(argv, env=env, cwd=str(home), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ProviderError(f"cannot start a local agent: {exc}") from None
        self._children[instance_id] = child
        self._known[instance_id] = {"pid": child.pid, "label": request.label, "market": request.market.value}
        self._save()
        return InstanceInfo(instance_id, request.label, RUNNING, request.market)

    def describe(self) -> dict[str, InstanceInfo]:
        out = {}
        for instance_id, known in self._known.items():
            alive = self._alive(instance_id, known["pid"])
            out[instance_id] = InstanceInfo(instance_id, known["label"], RUNNING if alive else TERMINATED,
                                            Market(known["market"]),
                                            reason="" if alive else "the agent process exited")
        return out

    def drain(self, instance_id: str) -> None:
        known = self._known.get(instance_id)
        if known is not None and self._alive(instance_id, known["pid"]):
            _signal_group(known["pid"], signal.SIGTERM)

    def terminate(self, instance_id: str) -> None:
        """Signals go only to a process still ours: a reaped pid may belong to a stranger."""
        known = self._known.get(instance_id)
        if known is None:
            return
        pid = known["pid"]
        if self._alive(instance_id, pid):
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_grace_s
            while time.monotonic() < deadline and self._alive(instance_id, pid):
                time.sleep(0.1)
            if self._alive(instance_id, pid):
                _signal_group(pid, signal.SIGKILL)
        child = self._children.pop(instance_id, None)
        if child is not None:
            child.wait()
        del self._known[instance_id]
        self._save()

    def instance_pids(self) -> dict[str, int]:
        return {i: k["pid"] for i, k in self._known.items()}

    # -- bookkeeping ----------------------------------------------------------------------

    def _alive(self, instance_id: str, pid: int) -> bool:
        child = self._children.get(instance_id)
        if child is not None:
            return child.poll() is None
        return _pid_alive(pid, self._known.get(instance_id, {}).get("label", ""))

    def _load(self) -> dict[str, dict]:
        try:
            return json.loads(self._registry.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._registry.with_name("instances.json.tmp")
        tmp.write_text(json.dumps(self._known, indent=1))
        os.replace(tmp, self._registry)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the agent leads its own group (start_new_session)


def _pid_alive(pid: int, label: str) -> bool:
    """A process we did not start (adopted after a restart): alive, not a zombie, and still our
    agent (its environment names the label), not a stranger that reused the pid."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except (OSError, IndexError):
        return False
    return state != "Z" and f"CLEARML_WORKER_ID={label}".encode() in environ.split(b"\0")
