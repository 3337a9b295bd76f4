"""Fair share of GPUs: quotas, the fair-share queue order and preemption (docs/scheduling.md).

    policy    the decisions, pure (time passed in): usage decay, the order, borrowing, victims
    usage     the decisions against the database: settings, quotas, usage counters, the fair pop
    preempt   the periodic pass that asks borrowers' agents to give GPUs back

The endpoints are server/services/quotas.py; the pop and the claim call in from
server/services/queues/entries.py and claim.py, the end of a claim from server/services/tasks/doc.py
(close_attempt), the preempted hand-back is server/services/leases.py.
"""
