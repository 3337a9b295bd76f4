"""The autoscaler's memory across restarts: its machines, the month's spend, spot failures.

One JSON file, replaced atomically on every save (write beside it, fsync, rename), so a crash
leaves either the old state or the new one, never half of each. `status` reads the same file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from autoscaler.budget import Ledger
from autoscaler.fleet import InstanceRecord
from shipyard.errors import ConfigError
from shipyard.locks import try_lock

VERSION = 1


@dataclass
class ScalerState:
    records: dict[str, InstanceRecord] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    spot_failures: dict[str, list[float]] = field(default_factory=dict)
    orphans_seen: dict[str, float] = field(default_factory=dict)   # task -> first seen orphaned
    saved_at: float = 0.0

    def to_json(self) -> dict:
        return {"version": VERSION, "saved_at": self.saved_at,
                "instances": [r.to_json() for r in self.records.values()],
                "ledger": self.ledger.to_json(), "spot_failures": self.spot_failures,
                "orphans_seen": self.orphans_seen}

    @classmethod
    def from_json(cls, data: dict) -> ScalerState:
        records = [InstanceRecord.from_json(r) for r in data.get("instances") or []]
        return cls(records={r.id: r for r in records}, ledger=Ledger.from_json(data.get("ledger") or {}),
                   spot_failures={k: [float(t) for t in v] for k, v in (data.get("spot_failures") or {}).items()},
                   orphans_seen={k: float(v) for k, v in (data.get("orphans_seen") or {}).items()},
                   saved_at=float(data.get("saved_at") or 0.0))


class StateFile:
    def __init__(self, path: Path):
        self.path = Path(path).expanduser()

    def lock(self) -> int:
        """Hold `<state>.lock` for this process's life: one autoscaler per state file. Returns
        the descriptor (closing it releases the lock)."""
        fd = try_lock(self.path.with_name(self.path.name + ".lock"))
        if fd is None:
            raise ConfigError(f"another autoscaler is running with the state file {self.path}")
        return fd

    def load(self) -> ScalerState:
        if not self.path.exists():
            return ScalerState()
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            return ScalerState.from_json(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read autoscaler state {self.path}: {exc}") from None

    def save(self, state: ScalerState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as out:
            json.dump(state.to_json(), out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


class MemoryStateFile(StateFile):
    """Keeps the state in memory (tests, the simulator)."""

    def __init__(self) -> None:
        self.state = ScalerState()

    def load(self) -> ScalerState:
        return self.state

    def save(self, state: ScalerState) -> None:
        self.state = state
