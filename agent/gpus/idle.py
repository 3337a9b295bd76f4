"""The idle-GPU policy: a task whose GPUs stay below X % busy for Y minutes is flagged or stopped.

Per queue, off by default: `agent.queue_idle_gpu` maps a queue to "PCT,MINUTES,ACTION", e.g.
{"train": "5,30,stop", "notebooks": "1,120,flag"}. ACTION is `flag` (a console line and
`runtime.gpu_idle_flagged` on the task; it keeps running) or `stop` (the task ends `stopped` with the
reason). The reading is the agent's own: the highest utilization of the task's GPUs, per sample.
A sample at or above PCT restarts the clock. Pure: the daemon's GPU watch feeds it samples.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shipyard.errors import ConfigError

ACTIONS = ("flag", "stop")


@dataclass(frozen=True)
class IdleRule:
    below_pct: float
    minutes: float
    action: str

    def reason(self) -> str:
        return (f"its GPUs stayed below {self.below_pct:g}% busy for {self.minutes:g} min "
                f"(the queue's idle-GPU policy, agent.queue_idle_gpu)")


def parse_rules(spec: Mapping[str, str]) -> dict[str, IdleRule]:
    """agent.queue_idle_gpu -> {queue: rule}; ConfigError naming the queue for a bad entry."""
    rules = {}
    for queue, text in spec.items():
        parts = [p.strip() for p in str(text).split(",")]
        try:
            pct, minutes, action = float(parts[0]), float(parts[1]), parts[2].lower()
        except (IndexError, ValueError):
            raise ConfigError(f"agent.queue_idle_gpu[{queue!r}]: {text!r} is not \"PCT,MINUTES,flag|stop\"") from None
        if action not in ACTIONS or not 0 < pct <= 100 or minutes <= 0:
            raise ConfigError(f"agent.queue_idle_gpu[{queue!r}]: {text!r} needs 0 < PCT <= 100, MINUTES > 0 and "
                              f"ACTION flag or stop")
        rules[queue] = IdleRule(pct, minutes, action)
    return rules


@dataclass
class IdleTracker:
    rules: Mapping[str, IdleRule]
    _since: dict[str, float] = field(default_factory=dict)     # task -> first idle sample of this stretch
    _acted: set[str] = field(default_factory=set)

    def sample(self, task: str, queue: str, utilization_pct: float, now: float) -> IdleRule | None:
        """The rule to act on now (once per task), or None."""
        rule = self.rules.get(queue)
        if rule is None or task in self._acted:
            return None
        if utilization_pct >= rule.below_pct:
            self._since.pop(task, None)
            return None
        since = self._since.setdefault(task, now)
        if now - since >= rule.minutes * 60:
            self._acted.add(task)
            return rule
        return None

    def forget(self, task: str) -> None:
        self._since.pop(task, None)
        self._acted.discard(task)
