"""The `shipyard` command. It only wires sub-commands; each lives beside its component."""
from __future__ import annotations

import json
import logging
import sys
import time

import click

from shipyard import __version__
from shipyard.errors import ShipyardError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shipyard")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="SHIPYARD_LOG_FORMAT",
              show_envvar=True, help="json: one JSON object per log line on stderr (for journald, Loki, ...).")
def cli(log_format: str) -> None:
    """Shipyard: run ML tasks recorded with ClearML, on your own machines."""
    if log_format == "json":
        use_json_logs()


class JsonLogFormatter(logging.Formatter):
    """{"ts", "level", "logger", "msg"}, plus "exc" and any `extra=` fields a call adds."""

    _STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        doc.update({k: v for k, v in vars(record).items() if k not in self._STANDARD and k not in doc})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def use_json_logs() -> None:
    """Every log record, and the agent's console lines, as JSON lines on stderr. Installed before a
    command's own logging.basicConfig, which then leaves the root logger's handler alone."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def console_logger() -> logging.Logger | None:
    """Where console lines go under --log-format json; None when they are printed as text."""
    json_on = any(isinstance(h.formatter, JsonLogFormatter) for h in logging.getLogger().handlers)
    return logging.getLogger("shipyard.console") if json_on else None


def _register() -> None:
    """Attach every component's commands, once per process (main() may be called again)."""
    if cli.commands:
        return
    from shipyard.cli.server import keys_cmd, server_cmd

    cli.add_command(server_cmd)
    cli.add_command(keys_cmd)
    try:
        from shipyard.cli.agent import register as register_agent
    except ModuleNotFoundError as exc:
        if exc.name != "shipyard.cli.agent":
            raise
    else:
        register_agent(cli)
        from shipyard.cli.doctor import doctor_cmd
        from shipyard.cli.init import init_cmd

        cli.add_command(init_cmd)
        cli.add_command(doctor_cmd)


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


if __name__ == "__main__":
    sys.exit(main())
