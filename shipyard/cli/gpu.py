"""`shipyard gpu lease|release|leases`: keep a GPU of this machine's daemon for manual work.

Thin: the lease file under the agent's work dir is the channel (agent/gpus/sharing.py); the
daemon on this machine reads it on every GPU sample and starts nothing new on a leased GPU.
"""
from __future__ import annotations

import getpass

import click

from agent.gpus.sharing import LeaseBook, parse_duration
from shipyard.cli.state import CliState, pass_state


@click.group("gpu")
def gpu_group() -> None:
    """Reserve this machine's GPUs for manual work (the daemon here steps aside)."""


@gpu_group.command("lease")
@click.argument("gpu", type=click.IntRange(min=0))
@click.option("--for", "duration", required=True, help="How long: 90m, 2h, 1d or seconds.")
@click.option("--by", default=None, help="Who holds it (default: your login name).")
@pass_state
def lease_cmd(state: CliState, gpu: int, duration: str, by: str | None) -> None:
    """Lease GPU (its NVML index) so no new task starts on it; running tasks finish."""
    lease = LeaseBook(state.settings.agent.work_dir).lease(gpu, parse_duration(duration), by or getpass.getuser())
    click.echo(f"{lease.describe()} (the daemon on this machine starts nothing new there from its next claim)")


@gpu_group.command("release")
@click.argument("gpu", type=click.IntRange(min=0))
@pass_state
def release_cmd(state: CliState, gpu: int) -> None:
    """Give a leased GPU back to the daemon."""
    found = LeaseBook(state.settings.agent.work_dir).release(gpu)
    click.echo(f"GPU {gpu} released" if found else f"GPU {gpu} was not leased")


@gpu_group.command("leases")
@pass_state
def leases_cmd(state: CliState) -> None:
    """The GPU leases on this machine."""
    leases = LeaseBook(state.settings.agent.work_dir).read()
    for lease in leases.values():
        click.echo(lease.describe())
    if not leases:
        click.echo("no GPU leases")
