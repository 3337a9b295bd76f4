"""`shipyard scheduler run | list | show`: thin; parse, load, build, call.

The scheduler modules are imported inside the commands, so `shipyard --help` does not pay for
APScheduler.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shipyard.cli.state import CliState, pass_state
from shipyard.client.api import ApiClient
from shipyard.errors import ShipyardError
from shipyard.logs import basic_config
from shipyard.signals import Shutdown

if TYPE_CHECKING:
    from scheduler.config import SchedulerConfig
    from scheduler.report import Row
    from scheduler.state import StateStore
    from scheduler.task_scheduler import TaskScheduler
    from scheduler.trigger_scheduler import TriggerScheduler

log = logging.getLogger(__name__)

HELP_EPILOG = """\b
Examples:
  shipyard scheduler run --config configs/scheduler.conf
  shipyard scheduler list --config configs/scheduler.conf
  shipyard scheduler show nightly-train --config configs/scheduler.conf
"""
_config_option = click.option("--config", "config_path", required=True,
                              type=click.Path(path_type=Path, dir_okay=False, exists=True),
                              help="The scheduler config (see configs/scheduler.conf).")
_state_option = click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False),
                             help="Override the config's scheduler.state_dir.")


@click.group("scheduler", epilog=HELP_EPILOG)
def scheduler_group() -> None:
    """Schedules and triggers that clone and enqueue tasks (ClearML TaskScheduler / TriggerScheduler)."""


@scheduler_group.command("run")
@_config_option
@_state_option
@click.option("--once", is_flag=True, help="One tick (decide, fire, read triggers), then exit.")
@click.option("--verbose", is_flag=True)
@pass_state
def run_cmd(state: CliState, config_path: Path, state_dir: Path | None, once: bool, verbose: bool) -> None:
    """Run the config's schedules and triggers until SIGTERM/SIGINT."""
    from scheduler.config import load_config
    from scheduler.service import SchedulerService
    from scheduler.state import StateStore

    basic_config(verbose)
    config = load_config(config_path, state_dir=state_dir)
    shutdown = Shutdown().install()
    api = state.api
    with StateStore.open(config.state_dir) as store, store.lock():
        service = SchedulerService(build_parts(config, api, store), poll_interval_s=config.poll_interval_s,
                                   shutdown=shutdown)
        click.echo(f"scheduler: {len(config.schedules)} schedule(s), {len(config.triggers)} trigger(s), "
                   f"state in {config.state_dir}")
        service.run(once=once)


def build_parts(config: SchedulerConfig, api: ApiClient, store: StateStore) -> list[TaskScheduler | TriggerScheduler]:
    from scheduler.task_scheduler import TaskScheduler
    from scheduler.trigger_scheduler import TriggerScheduler

    tasks, triggers = TaskScheduler(api, store), TriggerScheduler(api, store)
    for schedule in config.schedules:
        tasks.add(schedule)
    for trigger in config.triggers:
        triggers.add(trigger)
    return [tasks, triggers]


@scheduler_group.command("list")
@_config_option
@_state_option
@pass_state
def list_cmd(state: CliState, config_path: Path, state_dir: Path | None) -> None:
    """Each schedule and trigger: next fire time, last fire and its task's status."""
    from scheduler.config import load_config
    from scheduler.report import summary_rows
    from scheduler.state import StateStore

    config = load_config(config_path, state_dir=state_dir)
    with StateStore.open(config.state_dir) as store:
        rows = summary_rows(config, store, _statuses(state))
    _table(rows)


@scheduler_group.command("show")
@click.argument("name")
@_config_option
@_state_option
@click.option("--limit", default=20, show_default=True, help="How many recent fires to list.")
@pass_state
def show_cmd(state: CliState, name: str, config_path: Path, state_dir: Path | None, limit: int) -> None:
    """One schedule or trigger: its definition, state and recent fires."""
    from scheduler.config import load_config
    from scheduler.report import describe_item, fire_lines
    from scheduler.state import StateStore

    config = load_config(config_path, state_dir=state_dir)
    item = config.find(name)
    if item is None:
        raise click.BadParameter(f"no schedule or trigger named {name!r} in {config_path}", param_hint="NAME")
    with StateStore.open(config.state_dir) as store:
        for label, value in describe_item(item, store):
            click.echo(f"{label:14s} {value}")
        for line in fire_lines(store.history(item.owner, limit), _statuses(state)):
            click.echo(line)


def _statuses(state: CliState) -> Callable[[list[str]], dict[str, str]]:
    """A function task ids -> {id: status}, answering {} when the server can't be asked quickly."""
    def lookup(task_ids: list[str]) -> dict[str, str]:
        if not task_ids:
            return {}
        try:
            settings = state.settings
            if not settings.api.access_key:
                return {}
            with ApiClient.from_settings(settings, timeout=5.0, retry_deadline_s=2.0) as api:
                rows = api.call("tasks.get_all", {"id": task_ids, "only_fields": ["status"]})["tasks"]
        except ShipyardError as exc:
            log.debug("task statuses unavailable: %s", exc)
            return {}
        return {row["id"]: row.get("status", "?") for row in rows}

    return lookup


def _table(rows: list[Row]) -> None:
    from scheduler.report import Row

    if not rows:
        click.echo("no schedules or triggers in the config")
        return
    header = Row("NAME", "KIND", "WHEN / ON", "NEXT", "LAST", "RESULT")
    widths = [max(len(str(getattr(row, f))) for row in [header, *rows]) for f in Row._fields]
    for row in [header, *rows]:
        click.echo("  ".join(str(value).ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
