"""`shipyard up`: the embedded server and one agent on the default queue, in one process,
with no configuration. The agent's credentials are minted once and kept in the data dir.

The agent's key has the `agent` role, not admin: it runs tasks and mints each run a short-lived
`task` key of its own. A data dir from before roles (an admin agent key) has that key revoked
and replaced. The admin key is printed once, at the first start, for the person.
"""
from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import click

from server.app import create_state, seed_credentials, serve
from server.auth.keys import AGENT
from shipyard.cli.server import banner, config_from_cli, server_options
from shipyard.client.config import load_settings
from shipyard.signals import Shutdown

_AGENT_KEY_FILE = "local-agent.key"


def _agent_credentials(state, data_dir: Path) -> tuple[str, str]:
    path = data_dir / _AGENT_KEY_FILE
    if path.is_file():
        access, secret = path.read_text().split()
        key = state.keys.get(access)
        if key is not None and key["role"] == AGENT and state.keys.is_active(access):
            return access, secret
        if key is not None and key["role"] != AGENT:
            state.keys.revoke(access)   # an admin key from before roles: tasks must not reach it
    access, secret = state.keys.create(name="local agent (shipyard up)", role=AGENT)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{access} {secret}\n")
    return access, secret


def _write_client_conf(data_dir: Path, config, access: str, secret: str) -> Path:
    path = data_dir / "clearml.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(
            "# Written by `shipyard up`: point the clearml SDK, clearml-agent or the shipyard CLI here with\n"
            f"#   export CLEARML_CONFIG_FILE={path}\n"
            "api {\n"
            f"  api_server: \"{config.url(config.api_port)}\"\n"
            f"  files_server: \"{config.url(config.files_port)}\"\n"
            f"  web_server: \"{config.url(config.web_port)}\"\n"
            f"  credentials {{ access_key: \"{access}\", secret_key: \"{secret}\" }}\n"
            "}\n")
    return path


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


@click.command("up")
@server_options
@click.option("--queue", "queues", multiple=True, help="Queues for the agent (default: the default queue).")
@click.option("--no-agent", is_flag=True, help="Start only the server.")
@click.pass_context
def up_cmd(ctx, config_file, queues, no_agent, **overrides) -> None:
    """Start the embedded server and an agent on the default queue, ready to take work."""
    from agent.daemon.loop import Daemon
    from shipyard.client.api import ApiClient

    config = config_from_cli(config_file, **overrides)
    state = create_state(config)
    seeded = seed_credentials(state, config)
    access, secret = _agent_credentials(state, config.data_dir)
    conf_path = _write_client_conf(config.data_dir, config, access, secret)
    shutdown = Shutdown().install()   # signals: the agent drains first, then the server stops
    server_stop = Shutdown()
    ready = threading.Event()
    loop = _new_loop()

    async def run_server() -> None:
        started = asyncio.Event()
        server_task = asyncio.create_task(serve(state, config, server_stop, started))
        await started.wait()
        ready.set()
        await server_task

    server_thread = threading.Thread(target=lambda: loop.run_until_complete(run_server()), name="server",
                                     daemon=True)
    server_thread.start()
    if not ready.wait(30):
        raise click.ClickException("the server did not start (ports in use?)")
    click.echo(banner(config, seeded))
    click.echo(f"\nClient config for the SDK and the shipyard CLI (the local agent's key, role agent: "
               f"not an admin key):\n  export CLEARML_CONFIG_FILE={conf_path}")
    if no_agent:
        shutdown.event.wait()
    else:
        env = {**os.environ, "CLEARML_CONFIG_FILE": str(conf_path)}
        for name in ("CLEARML_API_HOST", "CLEARML_FILES_HOST", "CLEARML_WEB_HOST",
                     "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
            env.pop(name, None)
        settings = load_settings(env=env)
        with ApiClient.from_settings(settings) as api:
            Daemon(api, settings, list(queues), shutdown=shutdown, echo=click.echo).work()
    server_stop.trigger()
    server_thread.join(15)
