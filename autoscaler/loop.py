"""The autoscaler loop: observe, decide, act, every `poll_s` seconds (10 at most).

    tick: reconcile machines and workers → charge the month → decide → act
          → finish drains → re-queue orphaned tasks → renew machine keys → save

Safe scale-down, in two steps: when the policy retires an idle machine, the loop re-reads
from the server whether its worker holds a task (status report, lease, in-progress task);
only if not, it revokes the machine's key (no new request of that worker is accepted from
then on) and asks the agent to stop. `drain_s` later (the agent's long-poll plus a margin)
the machine is terminated, and anything its worker claimed in that window is re-queued.
A machine that vanishes or is preempted has its tasks re-queued and its key revoked.
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from autoscaler.config import AutoscalerConfig, Policy
from autoscaler.control import ControlPlane
from autoscaler.fleet import InstanceRecord
from autoscaler.model import Cause, Decision, Launch, Market, Observation, Phase, Terminate
from autoscaler.policy import decide
from autoscaler.provider import AgentBootstrap, CapacityError, CloudProvider, LaunchRequest
from autoscaler.state import StateFile
from shipyard import clock
from shipyard.errors import ShipyardError

log = logging.getLogger("shipyard.autoscaler")

PolicyFn = Callable[[Observation, Policy], Decision]
TAG_PREFIX = "shipyard:"


@dataclass(frozen=True)
class Hosts:
    """The server as the machines reach it (may differ from the autoscaler's own address)."""

    api: str
    files: str
    web: str


class Autoscaler:
    def __init__(self, config: AutoscalerConfig, provider: CloudProvider, control: ControlPlane,
                 store: StateFile, hosts: Hosts, *, echo: Callable[[str], None] | None = None,
                 policy: PolicyFn = decide):
        self.config, self.provider, self.control, self.store = config, provider, control, store
        self.hosts, self.policy = hosts, policy
        self.echo = echo or (lambda line: log.info("%s", line))
        self.state = store.load()
        self._last_holds: set[str] = set()
        self._queues_ready = False
        self._strangers: set[str] = set()

    @property
    def records(self) -> dict[str, InstanceRecord]:
        return self.state.records

    def queue_names(self) -> list[str]:
        names = list(self.config.policy.queues)
        for resource in self.config.policy.resources.values():
            names += [q for q in resource.queues if q not in names]
        return names

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = clock.monotonic()
            try:
                self.tick()
            except ShipyardError as exc:
                log.warning("autoscaler tick failed (retrying next tick): %s", exc)
            stop.wait(max(0.0, self.config.poll_s - (clock.monotonic() - started)))

    def tick(self) -> Decision:
        now = clock.now()
        if not self._queues_ready:  # agents refuse to start on a queue that does not exist
            self.control.ensure_queues(self.queue_names())
            self._queues_ready = True
        self._reconcile(now)
        self._charge(now)
        decision = self.policy(self.observe(now), self.config.policy)
        for action in decision.actions:
            self._guarded(self._act, action, now)
        self._report_holds(decision)
        self._guarded(self._finish_drains, now)
        self._guarded(self._sweep_orphans, now)
        self._guarded(self._renew_credentials, now)
        self.state.saved_at = now
        self.store.save(self.state)
        return decision

    def observe(self, now: float) -> Observation:
        window = self.config.policy.spot_retry_after_s
        failures = {r: tuple(t for t in times if now - t < window) for r, times in self.state.spot_failures.items()}
        self.state.spot_failures = {r: list(t) for r, t in failures.items() if t}
        return Observation(queues=self.control.queue_states(self.queue_names()),
                           fleet=tuple(r.view() for r in self.records.values()),
                           month_spent=self.state.ledger.current(now), spot_failures=failures)

    def _guarded(self, step: Callable, *args) -> None:
        """One failed action or step is logged and does not stop the others."""
        try:
            step(*args)
        except ShipyardError as exc:
            log.warning("autoscaler: %s failed: %s", getattr(step, "__name__", step), exc)

    # -- observation -----------------------------------------------------------------------

    def _reconcile(self, now: float) -> None:
        machines = self.provider.describe()
        workers = self.control.workers()
        for known in machines.values():
            if known.id not in self.records and not known.gone and known.id not in self._strangers:
                self._strangers.add(known.id)
                log.warning("instance %s (%s) carries this autoscaler's tag but is not in its state %s; "
                            "left alone: stop it by hand if it is not wanted", known.id, known.label,
                            getattr(self.store, "path", ""))
        for rec in list(self.records.values()):
            info = machines.get(rec.id)
            if info is None or info.gone:
                if rec.phase is Phase.DRAINING:
                    self.echo(f"{clock.iso(now)} terminated {rec.id}: drained (its agent exited)")
                    self._finalize(rec, now, "drained")
                    continue
                what = "preempted" if info is not None and info.preempted else "vanished"
                if rec.market is Market.SPOT:
                    self._spot_failure(rec.resource, now)
                detail = f" ({info.reason})" if info is not None and info.reason else ""
                self.echo(f"{clock.iso(now)} lost {rec.id} ({rec.resource}, {rec.market.value}): {what}{detail}")
                self._finalize(rec, now, what)
                continue
            view = workers.get(rec.worker)
            if view is not None:
                rec.saw_worker(view.task, view.last_seen, now)

    def _charge(self, now: float) -> None:
        for rec in self.records.values():
            self._charge_record(rec, now)

    def _charge_record(self, rec: InstanceRecord, now: float) -> None:
        self.state.ledger.charge(rec.queue, rec.price, max(rec.accrued_until, rec.launched_at), now)
        rec.accrued_until = max(rec.accrued_until, now)

    # -- actions ---------------------------------------------------------------------------

    def _act(self, action: Launch | Terminate, now: float) -> None:
        if isinstance(action, Launch):
            self._launch(action, now)
        else:
            self._terminate(action, now)

    def _launch(self, action: Launch, now: float) -> None:
        policy = self.config.policy
        resource = policy.resources[action.resource]
        label = f"{self.config.agent.worker_prefix}-{action.resource}-{uuid.uuid4().hex[:8]}"
        credential = self.control.mint(label, self.config.credential_ttl_s)
        serves = policy.serves(action.resource, action.queue)
        agent = self.config.agent
        bootstrap = AgentBootstrap(
            worker_id=label, queues=serves, api_host=self.hosts.api, files_host=self.hosts.files,
            web_host=self.hosts.web, access_key=credential.access_key, secret_key=credential.secret_key,
            credential_expires=clock.iso(credential.expires), package=agent.package,
            docker_image=resource.docker_image, long_poll_s=agent.long_poll_s, extra_env=agent.extra_env)
        tags = {f"{TAG_PREFIX}autoscaler": self.config.name, f"{TAG_PREFIX}label": label,
                f"{TAG_PREFIX}resource": action.resource, f"{TAG_PREFIX}queue": action.queue,
                f"{TAG_PREFIX}market": action.market.value}
        request = LaunchRequest(label, resource, action.queue, action.market, bootstrap, tags)
        try:
            info = self.provider.launch(request)
        except CapacityError as exc:
            self._safe_revoke(credential.access_key)
            if action.market is Market.SPOT:
                self._spot_failure(action.resource, now)
            self.echo(f"{clock.iso(now)} launch {action.resource} ({action.market.value}) refused: {exc}")
            return
        except ShipyardError:
            self._safe_revoke(credential.access_key)
            raise
        self.records[info.id] = InstanceRecord(
            id=info.id, label=label, resource=action.resource, queue=action.queue, market=action.market,
            price=action.price, launched_at=now, serves=serves, access_key=credential.access_key,
            credential_expires=credential.expires, accrued_until=now)
        self.store.save(self.state)  # a machine that runs is never missing from the state
        self.echo(f"{clock.iso(now)} {action.line()} -> {info.id}")

    def _terminate(self, action: Terminate, now: float) -> None:
        rec = self.records.get(action.instance)
        if rec is None:
            return
        if action.drain:
            held = self.control.held_task(rec.worker)  # re-checked with the server, just now
            if held:
                rec.saw_worker(held, rec.last_seen or now, now)
                self.echo(f"{clock.iso(now)} keep {rec.id}: its worker just took task {held}")
                return
            self.control.revoke(rec.access_key)  # from here on the worker can claim nothing
            self.provider.drain(rec.id)
            rec.start_drain(now)
            self.echo(f"{clock.iso(now)} drain {rec.id}: {action.reason}")
            return
        self.provider.terminate(rec.id)
        if action.cause is Cause.SPIN_UP and rec.market is Market.SPOT:
            self._spot_failure(rec.resource, now)
        self.echo(f"{clock.iso(now)} {action.line()}")
        self._finalize(rec, now, action.cause.value)

    def _finish_drains(self, now: float) -> None:
        for rec in list(self.records.values()):
            if rec.phase is Phase.DRAINING and now - (rec.drain_started or now) >= self.config.drain_s:
                self.provider.terminate(rec.id)
                self.echo(f"{clock.iso(now)} terminate {rec.id}: drained")
                self._finalize(rec, now, "drained")

    def _finalize(self, rec: InstanceRecord, now: float, why: str) -> None:
        """The machine is gone: charge it to the end, revoke its key, give back its tasks."""
        self._charge_record(rec, now)
        self._safe_revoke(rec.access_key)
        try:
            for task in self.control.requeue_held(rec.worker, f"instance {rec.id} {why}"):
                self.echo(f"{clock.iso(now)} re-queued task {task}: instance {rec.id} {why}")
            self.control.forget_worker(rec.worker)
        finally:
            self.records.pop(rec.id, None)

    # -- housekeeping ----------------------------------------------------------------------

    def _sweep_orphans(self, now: float) -> None:
        found = set(self.control.orphans(self.queue_names()))
        seen = self.state.orphans_seen
        for task in [t for t in seen if t not in found]:
            del seen[task]
        for task in found:
            first = seen.setdefault(task, now)
            if now - first >= self.config.orphan_grace_s:
                reason = f"claimed by a worker that went away before starting it ({now - first:.0f}s ago)"
                self.control.requeue(task, reason)
                del seen[task]
                self.echo(f"{clock.iso(now)} re-queued task {task}: {reason}")

    def _renew_credentials(self, now: float) -> None:
        ttl = self.config.credential_ttl_s
        for rec in self.records.values():
            if rec.access_key and rec.phase is not Phase.DRAINING and rec.credential_expires - now < ttl / 2:
                rec.credential_expires = self.control.extend(rec.access_key, ttl)

    def _spot_failure(self, resource: str, now: float) -> None:
        self.state.spot_failures.setdefault(resource, []).append(now)

    def _safe_revoke(self, access_key: str) -> None:
        if access_key:
            self._guarded(self.control.revoke, access_key)

    def _report_holds(self, decision: Decision) -> None:
        lines = {h.line() for h in decision.held}
        for line in sorted(lines - self._last_holds):
            self.echo(f"{clock.iso()} {line}")
        self._last_holds = lines
