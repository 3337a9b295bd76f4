"""decide() as tables: given queues, a fleet, the month's spend and the clock → the actions and
the refusals, each with its one-line reason."""
from __future__ import annotations

import pytest

from autoscaler.config import Budget
from autoscaler.model import Instance, Market, Observation, Phase, QueueState
from autoscaler.policy import decide
from tests.autoscaler.conftest import T0, make_policy, resource

GPU = resource("gpu", 1.0)
GPU_SPOT = resource("gpu", 1.0, spot_price=0.4)
BIG = resource("big", 3.0)
SMALL = resource("small", 0.5)


def inst(id: str, phase: Phase, *, res: str = "gpu", price: float = 1.0, queue: str = "q", age: float = 600,
         idle: float | None = None, seen: float = 5, market: Market = Market.ON_DEMAND) -> Instance:
    return Instance(id=id, resource=res, queue=queue, market=market, price=price, phase=phase,
                    launched_at=T0 - age, serves=(queue,), idle_since=None if idle is None else T0 - idle,
                    last_seen=None if phase is Phase.BOOTING else T0 - seen)


def obs(queues: dict[str, tuple[int, float]] | None = None, fleet=(), spent: float = 0.0,
        spot: dict[str, tuple[float, ...]] | None = None) -> Observation:
    return Observation(queues={n: QueueState(n, d, w) for n, (d, w) in (queues or {}).items()},
                       fleet=tuple(fleet), month_spent=spent, spot_failures=spot or {})


def summary(decision) -> list[str]:
    out = []
    for action in decision.actions:
        if hasattr(action, "market"):
            out.append(f"launch {action.resource} {action.market.value} {action.queue}")
        else:
            out.append(f"terminate {action.instance} {action.cause.value}")
    return out


CASES = [
    # name, policy, observation, expected actions, expected reason fragments (actions + holds)
    ("nothing to do", make_policy([GPU], {"q": [("gpu", 4)]}), obs({"q": (0, 0)}), [], []),
    ("one launch per waiting task", make_policy([GPU], {"q": [("gpu", 4)]}), obs({"q": (2, 30)}),
     ["launch gpu on-demand q"] * 2, ["2 waiting (oldest 30s)"]),
    ("idle and booting machines count", make_policy([GPU], {"q": [("gpu", 4)]}),
     obs({"q": (3, 30)}, [inst("a", Phase.IDLE, idle=5), inst("b", Phase.BOOTING, age=60)]),
     ["launch gpu on-demand q"], ["3 waiting (oldest 30s), 2 idle or starting"]),
    ("busy machines do not", make_policy([GPU], {"q": [("gpu", 4)]}),
     obs({"q": (1, 30)}, [inst("a", Phase.BUSY)]), ["launch gpu on-demand q"], []),
    ("maximum per type", make_policy([GPU], {"q": [("gpu", 2)]}), obs({"q": (5, 30)}),
     ["launch gpu on-demand q"] * 2, ["cap: gpu at its maximum of 2 for q"]),
    ("next type once the first is full", make_policy([GPU, BIG], {"q": [("gpu", 1), ("big", 1)]}),
     obs({"q": (2, 30)}), ["launch gpu on-demand q", "launch big on-demand q"], []),
    # --- budget ----------------------------------------------------------------------------
    ("budget: overall $/h", make_policy([resource("gpu", 1.1)], {"q": [("gpu", 9)]},
                                        budget=Budget(max_per_hour=4.0)),
     obs({"q": (1, 30)}, [inst(x, Phase.BUSY) for x in "abc"]), [],
     ["budget: $4.10/h would exceed $4.00/h"]),
    ("budget: exactly at the cap is allowed", make_policy([GPU], {"q": [("gpu", 9)]},
                                                          budget=Budget(max_per_hour=4.0)),
     obs({"q": (2, 30)}, [inst(x, Phase.BUSY) for x in "abc"]), ["launch gpu on-demand q"],
     ["budget: $5.00/h would exceed $4.00/h"]),
    ("budget: per queue", make_policy([GPU], {"q": [("gpu", 9)], "r": [("gpu", 9)]},
                                      budget=Budget(queue_max_per_hour={"q": 1.5})),
     obs({"q": (1, 30), "r": (1, 10)}, [inst("a", Phase.BUSY, queue="q")]), ["launch gpu on-demand r"],
     ["budget: queue q at $2.00/h would exceed $1.50/h"]),
    ("budget: a cheaper type still fits", make_policy([BIG, SMALL], {"q": [("big", 2), ("small", 2)]},
                                                      budget=Budget(max_per_hour=2.0)),
     obs({"q": (1, 30)}), ["launch small on-demand q"], ["budget: $3.00/h would exceed $2.00/h"]),
    ("budget: month reserve", make_policy([GPU], {"q": [("gpu", 9)]},
                                          budget=Budget(max_per_month=100.0, month_reserve_h=2.0)),
     obs({"q": (1, 30)}, [inst("a", Phase.BUSY)], spent=97.0), [],
     ["budget: $97.00 spent this month + 2h at $2.00/h would exceed $100.00/month"]),
    ("budget: month spent stops everything", make_policy([GPU], {"q": [("gpu", 9)]},
                                                         budget=Budget(max_per_month=100.0, month_stop_margin_s=600)),
     obs({"q": (4, 30)}, [inst("a", Phase.BUSY), inst("b", Phase.IDLE, idle=1)], spent=99.7),
     ["terminate a budget", "terminate b budget"], ["budget: $99.70 spent this month + 600s at $2.00/h reaches"]),
    ("longest wait gets the money first", make_policy([resource("gq"), resource("gr")],
                                                      {"q": [("gq", 9)], "r": [("gr", 9)]},
                                                      budget=Budget(max_per_hour=1.0)),
     obs({"q": (1, 10), "r": (1, 500)}), ["launch gr on-demand r"],
     ["hold gq for q: budget: $2.00/h would exceed $1.00/h"]),
    ("a machine on two queues serves both", make_policy([GPU], {"q": [("gpu", 9)], "r": [("gpu", 9)]}),
     obs({"q": (1, 10), "r": (1, 500)}), ["launch gpu on-demand r"], []),
    # --- spot and its fallback ---------------------------------------------------------------
    ("spot first", make_policy([GPU_SPOT], {"q": [("gpu", 4)]}), obs({"q": (1, 30)}),
     ["launch gpu spot q"], []),
    ("spot: two failures are not enough", make_policy([GPU_SPOT], {"q": [("gpu", 4)]}, spot_fallback_after=3),
     obs({"q": (1, 30)}, spot={"gpu": (T0 - 100, T0 - 50)}), ["launch gpu spot q"], []),
    ("spot: on-demand after three failures", make_policy([GPU_SPOT], {"q": [("gpu", 4)]}, spot_fallback_after=3),
     obs({"q": (1, 30)}, spot={"gpu": (T0 - 100, T0 - 50, T0 - 10)}), ["launch gpu on-demand q"],
     ["on-demand: 3 spot failures in the last 1800s"]),
    ("spot: old failures are forgiven", make_policy([GPU_SPOT], {"q": [("gpu", 4)]}, spot_retry_after_s=600),
     obs({"q": (1, 30)}, spot={"gpu": (T0 - 900, T0 - 800, T0 - 700)}), ["launch gpu spot q"], []),
    ("spot: budget at the spot price", make_policy([GPU_SPOT], {"q": [("gpu", 4)]},
                                                   budget=Budget(max_per_hour=0.5)),
     obs({"q": (2, 30)}), ["launch gpu spot q"], ["budget: $0.80/h would exceed $0.50/h"]),
    # --- idle timeout ------------------------------------------------------------------------
    ("idle: not yet", make_policy([GPU], {"q": [("gpu", 4)]}, idle_timeout_s=300),
     obs({"q": (0, 0)}, [inst("a", Phase.IDLE, idle=299)]), [], []),
    ("idle: at the timeout", make_policy([GPU], {"q": [("gpu", 4)]}, idle_timeout_s=300),
     obs({"q": (0, 0)}, [inst("a", Phase.IDLE, idle=300)]), ["terminate a idle"],
     ["idle: no task for 300s (limit 300s)"]),
    ("idle: work waiting keeps it", make_policy([GPU], {"q": [("gpu", 4)]}, idle_timeout_s=300),
     obs({"q": (1, 2)}, [inst("a", Phase.IDLE, idle=900)]), [], []),
    ("idle: busy is never idle", make_policy([GPU], {"q": [("gpu", 4)]}, idle_timeout_s=300),
     obs({"q": (0, 0)}, [inst("a", Phase.BUSY, idle=None, age=9000)]), [], []),
    ("idle: draining is left alone", make_policy([GPU], {"q": [("gpu", 4)]}, idle_timeout_s=300),
     obs({"q": (0, 0)}, [inst("a", Phase.DRAINING, idle=900)]), [], []),
    # --- warm pool ---------------------------------------------------------------------------
    ("warm pool filled", make_policy([resource("gpu", 1.0, warm=2)], {"q": [("gpu", 4)]}), obs({"q": (0, 0)}),
     ["launch gpu on-demand q"] * 2, ["warm pool: 0 of 2 running", "warm pool: 1 of 2 running"]),
    ("warm pool keeps idle machines", make_policy([resource("gpu", 1.0, warm=1)], {"q": [("gpu", 4)]},
                                                  idle_timeout_s=300),
     obs({"q": (0, 0)}, [inst("a", Phase.IDLE, idle=2000), inst("b", Phase.IDLE, idle=1000)]),
     ["terminate a idle"], []),
    ("warm pool counts demand launches", make_policy([resource("gpu", 1.0, warm=1)], {"q": [("gpu", 4)]}),
     obs({"q": (1, 30)}), ["launch gpu on-demand q"], []),
    ("warm pool within budget", make_policy([resource("gpu", 1.0, warm=1)], {"q": [("gpu", 4)]},
                                            budget=Budget(max_per_hour=0.5)),
     obs({"q": (0, 0)}), [], ["budget: $1.00/h would exceed $0.50/h"]),
    # --- spin-up timeout and silent agents ---------------------------------------------------
    ("spin-up: still in time", make_policy([GPU], {"q": [("gpu", 4)]}, spinup_timeout_s=900),
     obs({"q": (1, 30)}, [inst("a", Phase.BOOTING, age=899)]), [], []),
    ("spin-up: too late, replaced", make_policy([GPU], {"q": [("gpu", 4)]}, spinup_timeout_s=900),
     obs({"q": (1, 30)}, [inst("a", Phase.BOOTING, age=901)]), ["terminate a spin-up", "launch gpu on-demand q"],
     ["spin-up: gpu (on-demand) not registered after 901s (limit 900s)"]),
    ("unresponsive agent", make_policy([GPU], {"q": [("gpu", 4)]}, spinup_timeout_s=900),
     obs({"q": (0, 0)}, [inst("a", Phase.BUSY, seen=1000)]), ["terminate a unresponsive"],
     ["unresponsive: its agent has not reported for 1000s"]),
]


@pytest.mark.parametrize("name,policy,observation,expected,reasons", CASES, ids=[c[0] for c in CASES])
def test_decide(clock, name, policy, observation, expected, reasons):
    decision = decide(observation, policy)
    assert summary(decision) == expected
    text = "\n".join(decision.lines())
    for fragment in reasons:
        assert fragment in text, text


def test_every_action_and_hold_has_a_one_line_reason(clock):
    policy = make_policy([GPU_SPOT, BIG], {"q": [("gpu", 1), ("big", 1)]}, budget=Budget(max_per_hour=1.0))
    decision = decide(obs({"q": (5, 30)}, [inst("a", Phase.BOOTING, age=5000)]), policy)
    assert decision.actions and decision.held
    for line in decision.lines():
        assert line and "\n" not in line


def test_decide_is_pure(clock):
    policy = make_policy([GPU], {"q": [("gpu", 4)]})
    observation = obs({"q": (3, 30)}, [inst("a", Phase.IDLE, idle=5)])
    assert decide(observation, policy) == decide(observation, policy)
