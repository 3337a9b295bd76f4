"""`shipyard autoscaler status`: the fleet, the money spent so far, and the next decisions."""
from __future__ import annotations

from autoscaler import budget as money
from autoscaler.config import AutoscalerConfig
from autoscaler.model import Decision, Observation
from autoscaler.policy import spot_failures
from autoscaler.state import ScalerState
from shipyard import clock


def render(config: AutoscalerConfig, state: ScalerState, now: float, preview: Decision | str | None) -> list[str]:
    fleet = [r.view() for r in state.records.values()]
    budget = config.policy.budget
    spent = state.ledger.current(now)
    lines = [f"autoscaler {config.name} ({config.provider}); state saved {_ago(now, state.saved_at)}",
             f"spend: ${spent:.2f} this month ({money.month_of(now)})"
             + (f" of ${budget.max_per_month:.2f}" if budget.max_per_month is not None else "")
             + f"; now ${money.hourly_rate(fleet):.2f}/h"
             + (f" of ${budget.max_per_hour:.2f}/h" if budget.max_per_hour is not None else "")]
    for queue in config.policy.queues:
        cap = budget.queue_max_per_hour.get(queue)
        queue_spent = state.ledger.by_queue.get(queue, 0.0) if state.ledger.month == money.month_of(now) else 0.0
        lines.append(f"  queue {queue}: ${queue_spent:.2f} this month, ${money.hourly_rate(fleet, queue):.2f}/h"
                     + (f" of ${cap:.2f}/h" if cap is not None else ""))
    lines.append(f"fleet: {len(fleet)} instance(s)")
    for rec in sorted(state.records.values(), key=lambda r: r.launched_at):
        idle = f", idle {now - rec.idle_since:.0f}s" if rec.idle_since is not None else ""
        task = f", task {rec.task}" if rec.task else ""
        lines.append(f"  {rec.id:22s} {rec.resource:14s} {rec.market.value:9s} ${rec.price:.2f}/h "
                     f"{rec.phase.value:9s} up {now - rec.launched_at:.0f}s{idle}{task}")
    for resource in config.policy.resources.values():
        failures = spot_failures_for(config, state, resource.name, now)
        if resource.spot and failures:
            lines.append(f"spot failures of {resource.name}: {failures} in the last "
                         f"{config.policy.spot_retry_after_s:.0f}s (on-demand from "
                         f"{config.policy.spot_fallback_after})")
    if isinstance(preview, str):
        lines.append(f"next decisions: unknown ({preview})")
    elif preview is not None:
        lines.append("next decisions:" if preview.lines() else "next decisions: none")
        lines += [f"  {line}" for line in preview.lines()]
    return lines


def spot_failures_for(config: AutoscalerConfig, state: ScalerState, resource: str, now: float) -> int:
    observation = Observation(queues={}, spot_failures={k: tuple(v) for k, v in state.spot_failures.items()})
    return spot_failures(observation, config.policy, resource, now)


def _ago(now: float, then: float) -> str:
    return "never" if not then else f"{clock.iso(then)} ({now - then:.0f}s ago)"
