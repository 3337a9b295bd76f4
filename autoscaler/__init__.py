"""Machines up and down against queue depth, within a budget in dollars (docs/autoscaler.md).

    config.py        the config file, validated and frozen
    model.py         observation, actions, reasons (stdlib only)
    policy.py        decide(observation, policy) -> Decision: pure, behind shipyard.clock
    budget.py        $/hour checks and the month's ledger
    fleet.py         what is remembered per machine, and its phase changes
    loop.py          observe -> decide -> act, drain, re-queue, renew keys
    control*.py      the task server: interface, REST implementation, in-memory model
    provider.py      the machine interface; providers/ aws, local, fake
    userdata.py      the boot script of a cloud machine
    state.py         persisted fleet, spend and spot failures
    cli.py status.py `shipyard autoscaler [--config F] [status]`
"""
