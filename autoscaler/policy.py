"""The scaling policy: decide(observation, policy) -> launch and terminate actions.

Pure: no I/O, and the time comes from the one patchable clock (`shipyard.clock.now`). In order:

1. stop instances that never registered (spin-up timeout) or whose agent went silent;
2. if the month's budget is about to run out, stop everything and launch nothing;
3. retire instances idle past the idle timeout, unless their queue has work waiting or the
   warm pool of their type needs them;
4. for each queue, the longest-waiting first: launch for the tasks that no idle or booting
   instance will take, through its resource list in order, within each type's maximum and
   the budget (a refused launch becomes a Hold with its reason);
5. top warm pools up to their minimum, within the budget.

Spot resources launch on-demand once `spot_fallback_after` spot failures of that type fall
inside the last `spot_retry_after_s`.
"""
from __future__ import annotations

from dataclasses import replace

from autoscaler import budget as money
from autoscaler.config import Policy, ResourceType
from autoscaler.model import Cause, Decision, Hold, Instance, Launch, Market, Observation, Phase, QueueState, Terminate
from shipyard import clock


def decide(observation: Observation, policy: Policy) -> Decision:
    plan = _Plan(observation, policy, clock.now())
    plan.stop_stuck()
    if plan.stop_if_month_spent():
        return plan.decision()
    plan.retire_idle()
    plan.serve_queues()
    plan.fill_warm_pools()
    return plan.decision()


def spot_failures(observation: Observation, policy: Policy, resource: str, now: float) -> int:
    return sum(1 for t in observation.spot_failures.get(resource, ()) if now - t < policy.spot_retry_after_s)


class _Plan:
    """The decision being built: `live` is the fleet as it will be once the actions so far
    are carried out, so each later step (and each budget check) sees the earlier ones."""

    def __init__(self, observation: Observation, policy: Policy, now: float):
        self.obs, self.policy, self.now = observation, policy, now
        self.live: list[Instance] = list(observation.fleet)
        self.actions: list[Launch | Terminate] = []
        self.held: list[Hold] = []
        self._launched = 0

    def decision(self) -> Decision:
        return Decision(tuple(self.actions), tuple(self.held))

    # -- 1. machines that will never be useful ----------------------------------------------

    def stop_stuck(self) -> None:
        for inst in list(self.live):
            age = self.now - inst.launched_at
            if inst.phase is Phase.BOOTING and age > self.policy.spinup_timeout_s:
                self._terminate(inst, Cause.SPIN_UP, f"spin-up: {inst.resource} ({inst.market.value}) not "
                                f"registered after {age:.0f}s (limit {self.policy.spinup_timeout_s:.0f}s)")
            elif inst.phase in (Phase.IDLE, Phase.BUSY) and inst.last_seen is not None:
                silent = self.now - inst.last_seen
                if silent > self.policy.spinup_timeout_s:
                    self._terminate(inst, Cause.UNRESPONSIVE, f"unresponsive: its agent has not reported "
                                    f"for {silent:.0f}s (limit {self.policy.spinup_timeout_s:.0f}s)")

    # -- 2. the month's money ---------------------------------------------------------------

    def stop_if_month_spent(self) -> bool:
        reason = money.month_exhausted(self.policy.budget, self.live, self.obs.month_spent)
        if reason is None:
            return False
        for inst in list(self.live):
            self._terminate(inst, Cause.BUDGET, reason)
        self.held.append(Hold("all launches", reason))
        return True

    # -- 3. idle machines -------------------------------------------------------------------

    def retire_idle(self) -> None:
        timeout = self.policy.idle_timeout_s
        idle = [i for i in self.live if i.phase is Phase.IDLE and i.idle_since is not None
                and self.now - i.idle_since >= timeout]
        for inst in sorted(idle, key=lambda i: (i.idle_since, i.id)):  # longest idle first
            assert inst.idle_since is not None  # filtered above
            waiting = [q for q in inst.serves if self._depth(q) > 0]
            if waiting:
                continue  # it is about to take one of those tasks
            resource = self.policy.resources.get(inst.resource)
            if resource is not None and self._count(inst.resource, draining=False) <= resource.warm:
                continue  # the warm pool keeps it
            self._terminate(inst, Cause.IDLE, f"idle: no task for {self.now - inst.idle_since:.0f}s "
                            f"(limit {timeout:.0f}s)")

    # -- 4. demand --------------------------------------------------------------------------

    def serve_queues(self) -> None:
        spoken_for: set[str] = set()
        order = sorted(self.obs.queues.values(), key=lambda q: (-q.oldest_wait_s, q.name))
        for state in order:
            if state.name not in self.policy.queues or state.depth <= 0:
                continue
            ready = [i for i in self.live if i.id not in spoken_for and state.name in i.serves
                     and i.phase in (Phase.IDLE, Phase.BOOTING)][:state.depth]
            spoken_for.update(i.id for i in ready)
            need = state.depth - len(ready)
            if need > 0:
                self._launch_for(state, need, len(ready))

    def _launch_for(self, state: QueueState, need: int, ready: int) -> None:
        for rule in self.policy.queues[state.name]:
            resource = self.policy.resources[rule.resource]
            while need > 0:
                if self._count(rule.resource, queue=state.name) >= rule.max_instances:
                    self.held.append(Hold(f"queue {state.name}", f"cap: {rule.resource} at its maximum of "
                                          f"{rule.max_instances} for {state.name}"))
                    break
                why = (f"{state.depth} waiting (oldest {state.oldest_wait_s:.0f}s), "
                       f"{ready} idle or starting")
                if not self._launch(resource, state.name, why):
                    break
                need -= 1
                ready += 1
            if need <= 0:
                return

    # -- 5. warm pools ----------------------------------------------------------------------

    def fill_warm_pools(self) -> None:
        for resource in self.policy.resources.values():
            while resource.warm and (have := self._count(resource.name, draining=False)) < resource.warm:
                if not self._launch(resource, self.policy.home_queue(resource.name),
                                    f"warm pool: {have} of {resource.warm} running"):
                    break

    # -- helpers ----------------------------------------------------------------------------

    def _launch(self, resource: ResourceType, queue: str, why: str) -> bool:
        market, note = self._market(resource)
        price = resource.price(market)
        refusal = money.launch_refusal(self.policy.budget, self.live, queue, price, self.obs.month_spent)
        if refusal is not None:
            self.held.append(Hold(f"{resource.name} for {queue}", refusal))
            return False
        self.actions.append(Launch(resource.name, queue, market, price, why + note))
        self._launched += 1
        self.live.append(Instance(id=f"(new {self._launched})", resource=resource.name, queue=queue,
                                  market=market, price=price, phase=Phase.BOOTING, launched_at=self.now,
                                  serves=self.policy.serves(resource.name, queue)))
        return True

    def _market(self, resource: ResourceType) -> tuple[Market, str]:
        if not resource.spot:
            return Market.ON_DEMAND, ""
        failures = spot_failures(self.obs, self.policy, resource.name, self.now)
        if failures >= self.policy.spot_fallback_after:
            return Market.ON_DEMAND, (f"; on-demand: {failures} spot failures in the last "
                                      f"{self.policy.spot_retry_after_s:.0f}s")
        return Market.SPOT, ""

    def _terminate(self, inst: Instance, cause: Cause, reason: str) -> None:
        self.actions.append(Terminate(inst.id, cause, reason))
        if cause is Cause.IDLE:  # drained first: it still costs money until it is gone
            self.live = [replace(i, phase=Phase.DRAINING) if i.id == inst.id else i for i in self.live]
        else:
            self.live = [i for i in self.live if i.id != inst.id]

    def _depth(self, queue: str) -> int:
        state = self.obs.queues.get(queue)
        return state.depth if state else 0

    def _count(self, resource: str, *, queue: str | None = None, draining: bool = True) -> int:
        return sum(1 for i in self.live if i.resource == resource and (queue is None or i.queue == queue)
                   and (draining or i.phase is not Phase.DRAINING))
