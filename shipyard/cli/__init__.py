"""The `shipyard` command: the root group, its options, and where each command group lives.

    __init__     the root group (--log-format, --config-file), main(), command registration
    state        CliState: settings and API client shared by the commands (click's ctx.obj)
    agent        daemon, execute, build, list, config (and the daemon's --detached/--stop/--metrics-port)
    task         task ..., queue ...
    up           up: the embedded server and one agent in one process
    server       server, keys
    autoscaler   autoscaler [status]
    scheduler    scheduler run | list | show
    init, doctor init, doctor

Only this package imports click. Command modules import `state` (and `up` the public server
options of `server`), never each other's private names and never this module; this module
imports them only to register them.
"""
from __future__ import annotations

from pathlib import Path

import click

from shipyard import __version__
from shipyard.cli.state import CliState
from shipyard.errors import ShipyardError
from shipyard.logs import use_json_logs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shipyard")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="SHIPYARD_LOG_FORMAT",
              show_envvar=True, help="json: one JSON object per log line on stderr (for journald, Loki, ...).")
@click.option("--config-file", type=click.Path(path_type=Path, dir_okay=False), is_eager=True,
              help="clearml.conf to read (default: $CLEARML_CONFIG_FILE, ~/clearml.conf, then the one "
                   "`shipyard up` wrote in ~/.shipyard).")
@click.pass_context
def cli(ctx: click.Context, log_format: str, config_file: Path | None) -> None:
    """Shipyard: run ML tasks recorded with ClearML, on your own machines."""
    if log_format == "json":
        use_json_logs()
    ctx.obj = CliState(config_file=config_file)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    """Attach every command, once per process (main() may be called again)."""
    if cli.commands:
        return
    from shipyard.cli.agent import build_cmd, config_cmd, daemon_cmd, execute_cmd, list_cmd
    from shipyard.cli.autoscaler import autoscaler_cmd
    from shipyard.cli.doctor import doctor_cmd
    from shipyard.cli.init import init_cmd
    from shipyard.cli.quota import quota_group
    from shipyard.cli.scheduler import scheduler_group
    from shipyard.cli.server import keys_cmd, server_cmd
    from shipyard.cli.task import queue_group, task_group
    from shipyard.cli.up import up_cmd

    for command in (server_cmd, keys_cmd, daemon_cmd, execute_cmd, build_cmd, list_cmd, config_cmd, up_cmd,
                    task_group, queue_group, quota_group, autoscaler_cmd, scheduler_group, init_cmd, doctor_cmd):
        cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    _register()
    try:
        # Outside standalone mode click *returns* the code of a `ctx.exit(code)` instead of raising.
        code = cli.main(args=argv, prog_name="shipyard", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except ShipyardError as exc:
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    return 0
