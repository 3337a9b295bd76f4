"""Money: what the fleet costs per hour, whether one more machine fits the budget, and the
month's spend accrued from real instance-hours.

Every running, booting or draining instance counts at its full hourly price until it is
terminated; a launch is refused when it would push the hourly rate (overall or of its
queue) over its cap, or leave less than `month_reserve_h` hours of the fleet's cost in the
month's budget. The functions are pure; `Ledger` is the persisted month-to-date spend.
"""
from __future__ import annotations

import calendar
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from autoscaler.config import Budget
from autoscaler.model import Instance

_EPS = 1e-9


def hourly_rate(fleet: Iterable[Instance], queue: str | None = None) -> float:
    return sum(i.price for i in fleet if queue is None or i.queue == queue)


def launch_refusal(budget: Budget, fleet: Iterable[Instance], queue: str, price: float,
                   month_spent: float) -> str | None:
    """None if one more machine at `price` $/h for `queue` fits every cap, else the reason."""
    fleet = tuple(fleet)
    total = hourly_rate(fleet) + price
    if budget.max_per_hour is not None and total > budget.max_per_hour + _EPS:
        return f"budget: ${total:.2f}/h would exceed ${budget.max_per_hour:.2f}/h"
    cap = budget.queue_max_per_hour.get(queue)
    if cap is not None:
        rate = hourly_rate(fleet, queue) + price
        if rate > cap + _EPS:
            return f"budget: queue {queue} at ${rate:.2f}/h would exceed ${cap:.2f}/h"
    if budget.max_per_month is not None:
        projected = month_spent + total * budget.month_reserve_h
        if projected > budget.max_per_month + _EPS:
            return (f"budget: ${month_spent:.2f} spent this month + {budget.month_reserve_h:g}h at "
                    f"${total:.2f}/h would exceed ${budget.max_per_month:.2f}/month")
    return None


def month_exhausted(budget: Budget, fleet: Iterable[Instance], month_spent: float) -> str | None:
    """The reason to stop everything now, if the month's budget is about to run out."""
    if budget.max_per_month is None:
        return None
    rate = hourly_rate(fleet)
    if rate <= 0:
        return None
    ahead = month_spent + rate * budget.month_stop_margin_s / 3600.0
    if ahead + _EPS >= budget.max_per_month:
        return (f"budget: ${month_spent:.2f} spent this month + {budget.month_stop_margin_s:g}s at "
                f"${rate:.2f}/h reaches ${budget.max_per_month:.2f}/month")
    return None


def month_of(ts: float) -> str:
    moment = time.gmtime(ts)
    return f"{moment.tm_year:04d}-{moment.tm_mon:02d}"


def month_start(ts: float) -> float:
    moment = time.gmtime(ts)
    return float(calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0)))


@dataclass
class Ledger:
    """Dollars spent in the current (UTC) month, overall and per queue. Older months are kept
    as totals in `history` for `status`."""

    month: str = ""
    spent: float = 0.0
    by_queue: dict[str, float] = field(default_factory=dict)
    history: dict[str, float] = field(default_factory=dict)

    def charge(self, queue: str, price: float, start: float, end: float) -> None:
        """Add `price` $/h over [start, end); the part before the month of `end` goes to its
        own month (ticks are seconds apart, so an interval crosses at most one boundary)."""
        if end <= start:
            return
        boundary = month_start(end)
        if start < boundary:
            self._add(month_of(start), queue, price * (boundary - start) / 3600.0)
            start = boundary
        self._add(month_of(end), queue, price * (end - start) / 3600.0)

    def _add(self, month: str, queue: str, cost: float) -> None:
        if self.month and month < self.month:  # "YYYY-MM" sorts by time
            self.history[month] = self.history.get(month, 0.0) + cost
            return
        self._roll(month)
        self.spent += cost
        self.by_queue[queue] = self.by_queue.get(queue, 0.0) + cost

    def current(self, now: float) -> float:
        """Spent this month as of `now` (0 once a new month has begun)."""
        return self.spent if self.month == month_of(now) else 0.0

    def _roll(self, month: str) -> None:
        if month == self.month:
            return
        if self.month:
            self.history[self.month] = self.history.get(self.month, 0.0) + self.spent
        self.month, self.spent, self.by_queue = month, 0.0, {}

    def to_json(self) -> dict:
        return {"month": self.month, "spent": self.spent, "by_queue": self.by_queue, "history": self.history}

    @classmethod
    def from_json(cls, data: dict) -> Ledger:
        return cls(month=str(data.get("month") or ""), spent=float(data.get("spent") or 0.0),
                   by_queue={str(k): float(v) for k, v in (data.get("by_queue") or {}).items()},
                   history={str(k): float(v) for k, v in (data.get("history") or {}).items()})
