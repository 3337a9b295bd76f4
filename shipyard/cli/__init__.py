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
names them in `COMMANDS` and imports each only when it runs.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import click

from shipyard import __version__
from shipyard.cli.state import CliState
from shipyard.errors import ShipyardError
from shipyard.logs import use_json_logs

# name -> "module:attribute"; a command's module is imported only when that command runs (or
# `--help` lists them), so a waiting `shipyard daemon` never loads the server, the autoscaler or
# SQLAlchemy (issue 24: the idle daemon's memory).
COMMANDS = {
    "server": "shipyard.cli.server:server_cmd",
    "keys": "shipyard.cli.server:keys_cmd",
    "daemon": "shipyard.cli.agent:daemon_cmd",
    "execute": "shipyard.cli.agent:execute_cmd",
    "build": "shipyard.cli.agent:build_cmd",
    "list": "shipyard.cli.agent:list_cmd",
    "config": "shipyard.cli.agent:config_cmd",
    "up": "shipyard.cli.up:up_cmd",
    "task": "shipyard.cli.task:task_group",
    "queue": "shipyard.cli.task:queue_group",
    "autoscaler": "shipyard.cli.autoscaler:autoscaler_cmd",
    "scheduler": "shipyard.cli.scheduler:scheduler_group",
    "init": "shipyard.cli.init:init_cmd",
    "doctor": "shipyard.cli.doctor:doctor_cmd",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use, from `COMMANDS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module_name, attribute = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


def main(argv: list[str] | None = None) -> int:
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
