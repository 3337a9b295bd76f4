"""Preemption on the agent's side: the notice a task gets before it must give its GPUs back.

    server sets status_message "preempting: for <user>'s task <id>"  (shipyard.protocol.PREEMPT_REQUEST)
    → the watch sees it (agent/execution/watch.py, abort kind `preempted`)
    → `Notice.deliver`: SHIPYARD_PREEMPT_AT=<epoch seconds> written to the task's notice file
      (its path is in the task's env as SHIPYARD_PREEMPT_FILE), then the preempt signal
      (agent.preempt_signal, SIGUSR1 by default) to the task's process group / container
    → the runner waits the grace (agent.queue_preempt_grace_s[queue], else agent.preempt_grace_s)
      for the task to checkpoint and exit, then TERM, the abort grace, KILL
    → the outcome `preempted` is retryable: tasks.release(retry) puts the task back in its queue.

The file is written before the signal, so a handler that reads it always finds the deadline.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from shipyard.client.config import AgentSettings
from shipyard.errors import ConfigError

PREEMPT_FILE_ENV = "SHIPYARD_PREEMPT_FILE"
PREEMPT_FILE_NAME = "preempt.env"   # in the run's directory (the executor tells the task where it is)
PREEMPT_AT = "SHIPYARD_PREEMPT_AT"


def signal_number(name: str) -> int:
    """`SIGUSR1`, `USR1` or `10` -> the signal's number; ConfigError naming the setting otherwise."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        if number in {s.value for s in signal.Signals}:
            return number
    else:
        found = getattr(signal.Signals, text if text.startswith("SIG") else f"SIG{text}", None)
        if found is not None:
            return int(found)
    raise ConfigError(f"agent.preempt_signal (SHIPYARD_PREEMPT_SIGNAL): {name!r} is not a signal name or number")


def grace_for(agent: AgentSettings, queue: str | None) -> float:
    """The queue's preemption grace, else the agent's default."""
    value = agent.queue_preempt_grace_s.get(queue or "")
    if value in (None, ""):
        return agent.preempt_grace_s
    try:
        grace = float(value)
    except ValueError:
        raise ConfigError(f"agent.queue_preempt_grace_s[{queue!r}]: {value!r} is not a number of seconds") from None
    if grace < 0:
        raise ConfigError(f"agent.queue_preempt_grace_s[{queue!r}] must not be negative, got {grace:g}")
    return grace


def check(agent: AgentSettings) -> None:
    """At the daemon's start: the preemption settings make sense (ConfigError naming the bad one)."""
    signal_number(agent.preempt_signal)
    for queue in agent.queue_preempt_grace_s:
        grace_for(agent, queue)


@dataclass(frozen=True)
class Notice:
    """What one preemption tells the task: when it will be stopped, and why."""

    deadline: float     # wall clock (epoch seconds): SIGTERM comes then
    reason: str
    signum: int

    @classmethod
    def plan(cls, agent: AgentSettings, queue: str | None, reason: str, now: float | None = None) -> "Notice":
        return cls((time.time() if now is None else now) + grace_for(agent, queue), reason,
                   signal_number(agent.preempt_signal))

    def write(self, path: Path) -> None:
        """The notice file, replaced atomically (a task polling it never reads half of it)."""
        text = f"{PREEMPT_AT}={self.deadline:.3f}\nSHIPYARD_PREEMPT_REASON={self.reason.replace(chr(10), ' ')}\n"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text)
        os.chmod(partial, 0o644)
        partial.replace(path)

    def describe(self) -> str:
        name = signal.Signals(self.signum).name
        left = max(0.0, self.deadline - time.time())
        return f"{name} sent and {PREEMPT_AT} written; SIGTERM in {left:.0f}s unless the task exits first"
