"""The `shipyard` command. It only wires sub-commands; each lives beside its component."""
from __future__ import annotations

import sys

import click

from shipyard import __version__
from shipyard.errors import ShipyardError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shipyard")
def cli() -> None:
    """Shipyard: run ML tasks recorded with ClearML, on your own machines."""


def _register() -> None:
    from server.cli import keys_cmd, server_cmd

    cli.add_command(server_cmd)
    cli.add_command(keys_cmd)
    try:
        from agent.cli import register as register_agent
    except ModuleNotFoundError as exc:
        if exc.name != "agent.cli":
            raise
    else:
        register_agent(cli)


def main(argv: list[str] | None = None) -> int:
    _register()
    try:
        cli.main(args=argv, prog_name="shipyard", standalone_mode=False)
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


if __name__ == "__main__":
    sys.exit(main())
