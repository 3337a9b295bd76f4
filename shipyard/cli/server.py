"""`shipyard server` and `shipyard keys`: thin wrappers over server.app."""
from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from server.app import create_state, seed_credentials, serve
from server.auth.keys import KeyStore
from server.config import ServerConfig, load_server_config
from server.ports import describe, unavailable
from server.storage import schema
from server.storage.store import Store
from shipyard.errors import ConfigError
from shipyard.signals import Shutdown


def run_loop(coro) -> None:
    """Run on uvloop where it is installed (uvicorn[standard] brings it): several times less
    per-request overhead than the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    if sys.version_info < (3, 11):  # asyncio.Runner (and its loop_factory) arrived in 3.11
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def banner(config: ServerConfig, seeded) -> str:
    lines = [
        "Shipyard server ready",
        f"  API server:   {config.url(config.api_port)}",
        f"  Files server: {config.url(config.files_port)}",
        f"  Web server:   {config.url(config.web_port)}   (sign in there: task links use this host)",
        *([f"  Web UI:       the official ClearML web UI from {config.web_ui}"] if config.web_ui else []),
        f"  Data dir:     {config.data_dir}",
        f"  Database:     {'sqlite (' + str(config.data_dir / 'shipyard.db') + ')' if not config.db else config.db.split('@')[-1]}",
    ]
    if seeded is not None and seeded.generated:
        lines += [
            "",
            "Generated admin credentials (shown once; the secret is stored hashed):",
            f"  CLEARML_API_ACCESS_KEY={seeded.access_key}",
            f"  CLEARML_API_SECRET_KEY={seeded.secret_key}",
        ]
    lines += [
        "",
        "Point the clearml SDK or agent here with:",
        f"  export CLEARML_API_HOST={config.url(config.api_port)}",
        f"  export CLEARML_FILES_HOST={config.url(config.files_port)}",
        f"  export CLEARML_WEB_HOST={config.url(config.web_port)}",
    ]
    return "\n".join(lines)


def server_options(fn):
    options = [
        click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
                     help="Server config file (HOCON); see configs/server.conf."),
        click.option("--host", help="Address to listen on (default 127.0.0.1)."),
        click.option("--public-host", help="Host name in every address given to clients: the banner, the "
                                           "clearml.conf `shipyard up` writes, task links (default: --host; "
                                           "localhost for a loopback or any-address --host)."),
        click.option("--api-port", type=int, help="API port (default 8008)."),
        click.option("--files-port", type=int, help="Files port (default 8081)."),
        click.option("--web-port", type=int, help="Web port (default 8080)."),
        click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
                     help="Where the database and files live (default ~/.shipyard)."),
        click.option("--db", help="Database URL (default: SQLite in the data dir; or postgresql://...)."),
        click.option("--access-key", envvar="SHIPYARD_ACCESS_KEY", help="Admin access key to seed."),
        click.option("--secret-key", envvar="SHIPYARD_SECRET_KEY",
                     help="Admin secret key to seed. On the command line it shows in the process list: "
                          "prefer $SHIPYARD_SECRET_KEY or --secret-key-file."),
        click.option("--secret-key-file", type=click.Path(dir_okay=False), envvar="SHIPYARD_SECRET_KEY_FILE",
                     help="Read the admin secret key from this file (its first line)."),
        click.option("--web-ui", type=click.Path(file_okay=False),
                     help="Serve the official ClearML web UI from this build directory (the one holding its "
                          "index.html) at the web port instead of Shipyard's page; see docs/official-ui.md."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def config_from_cli(config_file, **overrides) -> ServerConfig:
    warn_secret_on_command_line()
    return load_server_config(config_file, overrides=overrides)


def ensure_ports_free(config: ServerConfig) -> None:
    """Fail at once, in one line naming each busy port and what holds it, before anything is written."""
    problems = unavailable(config.host, {"--api-port": config.api_port, "--files-port": config.files_port,
                                         "--web-port": config.web_port})
    if problems:
        raise ConfigError(describe(problems))


def warn_secret_on_command_line() -> None:
    """Say so on stderr when --secret-key was typed as an argument: every local user can read it
    in /proc/<pid>/cmdline (`ps -ef`) for as long as the server runs."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.get_parameter_source("secret_key") == click.core.ParameterSource.COMMANDLINE:
        click.echo("warning: --secret-key on the command line is visible to every local user in the process "
                   "list; use $SHIPYARD_SECRET_KEY or --secret-key-file PATH instead", err=True)


@click.command("server")
@server_options
@click.option("--upgrade-db", is_flag=True,
              help="Upgrade the database's schema to this release's and exit (back it up first: `shipyard backup`, "
                   "or pg_dump). Without it a start upgrades SQLite itself and refuses an older PostgreSQL "
                   "schema (upgrade_db_at_start in configs/server.conf).")
def server_cmd(config_file, upgrade_db: bool, **overrides) -> None:
    """Run the embedded ClearML-compatible server (API, files and web listeners)."""
    config = config_from_cli(config_file, **overrides)
    if upgrade_db:
        upgrade_database(config)
        return
    ensure_ports_free(config)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = create_state(config)
    seeded = seed_credentials(state, config)
    shutdown = Shutdown().install()
    ready = asyncio.Event()

    async def main() -> None:
        async def announce() -> None:
            await ready.wait()
            click.echo(banner(config, seeded), err=False)

        announcer = asyncio.create_task(announce())
        await serve(state, config, shutdown, ready)
        announcer.cancel()

    run_loop(main())


def upgrade_database(config: ServerConfig) -> None:
    """`server --upgrade-db`: bring the schema to head, say from what, and exit."""
    if not config.db:  # SQLite in the data dir: an empty one gets a fresh database
        config.data_dir.mkdir(parents=True, exist_ok=True)
    before, done = schema.upgrade(config.db_url)
    where = config.db_url.split("@")[-1]
    if done == "current":
        click.echo(f"database {where}: schema already at revision {before.head}; nothing to do")
    else:
        click.echo(f"database {where}: schema {done}, {before.current or ('pre-migration' if before.legacy else 'empty')}"
                   f" -> {before.head}")


@click.group("keys")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--db")
@click.pass_context
def keys_cmd(ctx: click.Context, data_dir, db) -> None:
    """Create, list and revoke API credentials of the embedded server."""
    config = load_server_config(overrides={"data_dir": data_dir, "db": db})
    config.data_dir.mkdir(parents=True, exist_ok=True)
    ctx.obj = KeyStore(Store(config.db_url, synchronous=config.sqlite_synchronous))


@keys_cmd.command("create")
@click.option("--name", default="", help="A label for the key.")
@click.option("--role", default="admin", type=click.Choice(["admin", "agent", "user"]),
              help="admin: everything; agent: for `shipyard daemon` (mints a short-lived key per run); "
                   "user: a person's or a machine's key, manages no keys.")
@click.pass_obj
def keys_create(keys: KeyStore, name: str, role: str) -> None:
    access, secret = keys.create(name=name, role=role)
    click.echo(f"CLEARML_API_ACCESS_KEY={access}\nCLEARML_API_SECRET_KEY={secret}")


@keys_cmd.command("list")
@click.pass_obj
def keys_list(keys: KeyStore) -> None:
    for row in keys.list():
        state = "revoked" if row["revoked"] else "active"
        click.echo(f"{row['access_key']}  {state:8s} {row['role']:6s} {row['name']}")


@keys_cmd.command("revoke")
@click.argument("access_key")
@click.pass_obj
def keys_revoke(keys: KeyStore, access_key: str) -> None:
    if not keys.revoke(access_key):
        raise click.ClickException(f"no such access key: {access_key}")
    click.echo(f"revoked {access_key}")
