"""The loop against the in-memory server and the fake provider: launches with their own keys,
safe scale-down, re-queues after preemption, spot fallback, spin-up timeout, orphans."""
from __future__ import annotations

from autoscaler.config import Budget
from autoscaler.control_memory import InMemoryControlPlane
from autoscaler.model import Market, Phase
from autoscaler.provider import TERMINATED
from tests.autoscaler.conftest import make_policy, resource


def _only(world):
    (rec,) = world.scaler.records.values()
    return rec


def test_scale_up_run_and_drain_at_idle(world_factory):
    # Given a queue with two tasks and nothing running
    world = world_factory(make_policy([resource("cpu", 0.5)], {"q": [("cpu", 4)]}, idle_timeout_s=60))
    for _ in range(2):
        world.server.enqueue("q")
    # When the loop ticks, two machines start, each with a key of its own
    world.step(0)
    assert len(world.provider.live()) == 2
    keys = {m.request.bootstrap.access_key for m in world.provider.live()}
    assert len(keys) == 2 and all(world.server.key_active(k) for k in keys)
    assert all(m.request.bootstrap.api_host == "http://api" for m in world.provider.live())
    # Then their agents register and take the tasks
    world.step(30)
    for worker in list(world.server.worker_docs):
        world.server.claim(worker)
    world.step(10)
    assert {r.phase for r in world.scaler.records.values()} == {Phase.BUSY}
    for worker in list(world.server.worker_docs):
        world.server.finish(worker)
    # Idle for less than the timeout: kept
    world.step(10)
    world.step(50)
    assert all(r.phase is Phase.IDLE for r in world.scaler.records.values())
    # At the timeout: drained (key revoked: the worker can claim nothing any more)...
    world.step(10)
    assert {r.phase for r in world.scaler.records.values()} == {Phase.DRAINING}
    assert not any(world.server.key_active(k) for k in keys)
    assert all(m.drained for m in world.provider.machines.values())
    world.server.enqueue("q")
    assert all(world.server.claim(w) is None for w in list(world.server.worker_docs))
    # ...and terminated drain_s later, workers forgotten; the new task gets a fresh machine
    drained = set(world.scaler.records)
    world.step(15)
    assert not drained & set(world.scaler.records) and not world.server.worker_docs
    assert [r.phase for r in world.scaler.records.values()] == [Phase.BOOTING]
    assert world.scaler.state.ledger.spent > 0
    assert any("drain" in line and "idle: no task for 60s" in line for line in world.lines)


class RacyServer(InMemoryControlPlane):
    """A task arrives and is claimed right after the autoscaler read the queues."""

    race_worker: str | None = None

    def queue_states(self, names):
        states = super().queue_states(names)
        if self.race_worker:
            self.enqueue("q")
            self.claim(self.race_worker)
            self.race_worker = None
        return states


def test_never_terminates_a_worker_that_just_took_a_task(world_factory):
    world = world_factory(make_policy([resource("cpu")], {"q": [("cpu", 1)]}, idle_timeout_s=60))
    racy = RacyServer()
    world.server = world.scaler.control = racy
    racy.ensure_queues(["q"])
    racy.enqueue("q")
    world.step(0)
    world.step(30)
    rec = _only(world)
    racy.claim(rec.worker)
    world.step(10)
    racy.finish(rec.worker)
    world.step(10)
    world.step(50)
    assert rec.phase is Phase.IDLE
    # idle past the timeout as of the next observation...
    racy.race_worker = rec.worker
    world.step(10)  # ...but its worker takes a task between the observation and the act
    assert rec.phase is Phase.BUSY and world.provider.live()
    assert racy.key_active(rec.access_key)
    assert any("just took task" in line for line in world.lines)


def test_preempted_spot_machines_requeue_their_tasks_and_fall_back_to_on_demand(world_factory):
    world = world_factory(make_policy([resource("gpu", 1.0, spot_price=0.3)], {"q": [("gpu", 1)]},
                                      spot_fallback_after=3))
    task = world.server.enqueue("q")
    markets = []
    for _ in range(4):
        world.step(10)
        world.step(30)
        rec = _only(world)
        markets.append(rec.market)
        assert world.server.claim(rec.worker) == task
        world.step(10)
        if rec.market is Market.ON_DEMAND:
            break
        # The provider reclaims the machine while it runs the task
        world.provider.preempt(rec.id)
        world.server.drop_worker(rec.worker)
        world.step(1)
        assert world.server.entries["q"] == [task], "the task goes back to the front of its queue"
        assert not world.server.key_active(rec.access_key)
    assert markets == [Market.SPOT] * 3 + [Market.ON_DEMAND]
    assert world.server.tasks[task].requeues == 3
    assert any("on-demand: 3 spot failures" in line for line in world.lines)
    assert sum("lost" in line and "preempted" in line for line in world.lines) == 3


def test_refused_spot_requests_count_and_revoke_the_unused_key(world_factory):
    world = world_factory(make_policy([resource("gpu", 1.0, spot_price=0.3)], {"q": [("gpu", 2)]},
                                      spot_fallback_after=2))
    world.provider.refuse_spot = lambda _request: True
    world.server.enqueue("q")
    world.step(0)
    world.step(10)
    assert not world.provider.machines
    assert world.server.keys and not any(k.revoked is False for k in world.server.keys.values())
    world.step(10)
    (machine,) = world.provider.machines.values()
    assert machine.request.market is Market.ON_DEMAND


def test_spin_up_timeout_replaces_a_machine_that_never_registers(world_factory):
    world = world_factory(make_policy([resource("gpu", 1.0, spot_price=0.3)], {"q": [("gpu", 1)]},
                                      spinup_timeout_s=120), boot_s=10_000)
    world.server.enqueue("q")
    world.step(0)
    first = _only(world)
    world.step(100)
    assert first.phase is Phase.BOOTING
    world.step(30)
    assert world.provider.machines[first.id].state == TERMINATED
    assert not world.server.key_active(first.access_key)
    assert world.scaler.state.spot_failures["gpu"]
    assert _only(world).id != first.id  # replaced in the same decision


def test_orphaned_claim_is_requeued_after_the_grace(world_factory):
    world = world_factory(make_policy([resource("cpu")], {"q": [("cpu", 1)]}))
    task = world.server.enqueue("q")
    world.step(0)
    world.step(30)
    rec = _only(world)
    assert world.server.claim(rec.worker, start=False) == task  # popped, never started
    world.step(30)  # first seen orphaned
    world.step(50)
    assert world.server.entries["q"] == []
    world.step(10)  # orphaned for the 60 s grace
    assert world.server.entries["q"] == [task]
    assert any(f"re-queued task {task}" in line for line in world.lines)


def test_keys_are_renewed_while_the_machine_lives(world_factory):
    world = world_factory(make_policy([resource("cpu", warm=1)], {"q": [("cpu", 1)]}))
    world.step(0)
    rec = _only(world)
    first = rec.credential_expires
    for _ in range(200):  # 2000 s: past half of the 3600 s lifetime
        world.step(10)
    assert rec.credential_expires > first and world.server.key_active(rec.access_key)


def test_month_budget_stops_every_machine_and_requeues_running_work(world_factory):
    policy = make_policy([resource("gpu", 36.0)], {"q": [("gpu", 2)]},
                         budget=Budget(max_per_month=20.0, month_reserve_h=0.1, month_stop_margin_s=60))
    world = world_factory(policy)
    task = world.server.enqueue("q")
    world.step(0)
    world.step(30)
    rec = _only(world)
    world.server.claim(rec.worker)
    for _ in range(200):
        world.step(10)
        if not world.scaler.records:
            break
    spent = world.scaler.state.ledger.spent
    assert not world.provider.live() and spent <= 20.0, spent
    assert world.server.entries["q"] == [task]
    world.step(10)
    assert not world.provider.live()  # and no new launch while the month's money is gone
