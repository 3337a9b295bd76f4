"""`shipyard autoscaler --config FILE` and `shipyard autoscaler status`. Thin: parse, build, run.

The autoscaler talks to the server with the admin credentials of the usual client settings
(clearml.conf or CLEARML_API_* variables); the file given with --config says what to scale.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from autoscaler.config import AutoscalerConfig, load_config
from autoscaler.control_http import HttpControlPlane
from autoscaler.loop import Autoscaler, Hosts
from autoscaler.providers import build_provider
from autoscaler.state import StateFile
from autoscaler.status import render
from shipyard import clock
from shipyard.cli.state import CliState, state_of
from shipyard.client.api import ApiClient
from shipyard.client.config import Settings
from shipyard.errors import ConfigError, ServerError, ServerUnreachable
from shipyard.signals import Shutdown

HELP_EPILOG = """\b
Examples:
  shipyard autoscaler --config configs/autoscaler.conf
  shipyard autoscaler --config configs/autoscaler.conf --once     # one decision, then exit
  shipyard autoscaler status --config configs/autoscaler.conf
"""

_CONFIG = click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
                       help="The autoscaler's config file (see configs/autoscaler.conf).")


def _admin_settings(state: CliState) -> Settings:
    settings = state.settings
    if not settings.api.access_key or not settings.api.secret_key:
        raise ConfigError("the autoscaler needs admin API credentials: set api.credentials in clearml.conf "
                          "or CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY")
    return settings


def _config(config_path: Path | None) -> AutoscalerConfig:
    if config_path is None:
        raise ConfigError("--config FILE is required (see configs/autoscaler.conf)")
    return load_config(config_path)


def build(config: AutoscalerConfig, settings: Settings, *, echo=click.echo, deadline_s: float = 15.0) -> Autoscaler:
    api = settings.api
    client = ApiClient(api.api_server, api.access_key, api.secret_key, f"autoscaler:{config.name}",
                       verify_ssl=api.verify_ssl, retry_deadline_s=deadline_s)
    agent = config.agent
    hosts = Hosts(agent.api_host or api.api_server, agent.files_host or api.files_server,
                  agent.web_host or api.web_server)
    return Autoscaler(config, build_provider(config), HttpControlPlane(client, deadline_s=deadline_s),
                      StateFile(config.state_file), hosts, echo=echo)


@click.group("autoscaler", invoke_without_command=True, epilog=HELP_EPILOG)
@_CONFIG
@click.option("--once", is_flag=True, help="Make one decision, carry it out, and exit.")
@click.option("--verbose", is_flag=True)
@click.pass_context
def autoscaler_cmd(ctx: click.Context, config_path: Path | None, once: bool, verbose: bool) -> None:
    """Start and stop machines against queue depth, within a budget in dollars."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if ctx.invoked_subcommand:
        return
    config = _config(config_path)
    lock = StateFile(config.state_file).lock()
    ctx.call_on_close(lambda: os.close(lock))
    scaler = build(config, _admin_settings(state_of(ctx)))
    click.echo(f"autoscaler {config.name}: {config.provider} provider, queues {', '.join(scaler.queue_names())}, "
               f"deciding every {config.poll_s:g}s; state in {config.state_file}")
    try:
        if once:
            scaler.tick()
        else:
            shutdown = Shutdown().install()
            scaler.run(shutdown.event)
            click.echo(f"autoscaler {config.name} stopped; its {len(scaler.records)} machine(s) keep running")
    finally:
        scaler.provider.close()
        scaler.control.close()


@autoscaler_cmd.command("status")
@_CONFIG
@click.pass_context
def status_cmd(ctx: click.Context, config_path: Path | None) -> None:
    """The fleet, the spend so far, and what the next decision would be."""
    group_config = ctx.parent.params.get("config_path") if ctx.parent is not None else None
    config = _config(config_path or group_config)   # `autoscaler --config F status` works too
    state = StateFile(config.state_file).load()
    now = clock.now()
    preview: object
    try:
        scaler = build(config, _admin_settings(state_of(ctx)), deadline_s=3.0)
        scaler.state = state
        preview = scaler.policy(scaler.observe(now), config.policy)
        scaler.control.close()
    except (ServerUnreachable, ServerError) as exc:
        preview = f"server: {exc}"
    for line in render(config, state, now, preview):
        click.echo(line)
