"""`shipyard quota set / list / delete`: GPU quotas of users and projects (the server's quotas.*
endpoints; an admin key). What they mean: docs/scheduling.md."""
from __future__ import annotations

import click

from shipyard.cli.state import CliState, pass_state


def _entity(user: str | None, project: str | None) -> dict:
    if bool(user) == bool(project):
        raise click.UsageError("give exactly one of --user and --project")
    return {"user": user} if user else {"project": project}


@click.group("quota")
def quota_group() -> None:
    """Guaranteed GPUs per user or project, and the right to borrow idle ones (admin key)."""


@quota_group.command("set")
@click.option("--user", help="The user (its access key id, as tasks record it).")
@click.option("--project", help="The project id.")
@click.option("--gpus", type=click.IntRange(0), required=True, help="Guaranteed GPUs.")
@click.option("--borrow/--no-borrow", default=True, show_default=True,
              help="May use idle GPUs beyond the guarantee (preemptible there).")
@pass_state
def quota_set(state: CliState, user, project, gpus, borrow) -> None:
    out = state.api.call("quotas.set", {**_entity(user, project), "gpus": gpus, "borrow": borrow})
    click.echo(f"{out['entity']}: {out['gpus']} GPU(s) guaranteed, {'may' if out['borrow'] else 'may not'} borrow")


@quota_group.command("delete")
@click.option("--user")
@click.option("--project")
@pass_state
def quota_delete(state: CliState, user, project) -> None:
    out = state.api.call("quotas.delete", _entity(user, project))
    click.echo(f"{out['entity']}: {'deleted' if out['deleted'] else 'no quota set through the API'}")


@quota_group.command("list")
@pass_state
def quota_list(state: CliState) -> None:
    out = state.api.call("quotas.get_all", {})
    click.echo(f"fair-share half-life {out['half_life_h']:g} h, preemption {'on' if out['preemption'] else 'off'}")
    if not out["quotas"]:
        click.echo("no quotas: queues are served in order (FIFO)")
    for row in out["quotas"]:
        click.echo(f"{row['entity']:40} {row['gpus']:>4} GPU(s)  {'borrow' if row['borrow'] else 'no-borrow':9}  "
                   f"running {row['running_gpus']:>3}  {row['gpu_hours']:>10.2f} GPU-h  ({row['source']})")
