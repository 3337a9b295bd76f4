"""`shipyard up`: the embedded server and one agent on the default queue, in one process,
with no configuration. The agent's credentials are minted once and kept in the data dir.

Ctrl-C once: the agent takes no new task and waits for the running ones (it says so, and that a
second Ctrl-C aborts them); twice: the running tasks are aborted and reported `stopped`, with the
reason, before the server stops. A busy port fails the start at once, before anything is written.

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
from shipyard.cli.server import banner, config_from_cli, ensure_ports_free, server_options
from shipyard.client.config import load_settings
from shipyard.protocol import OutcomeKind
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


class _ServerThread:
    """The server on a thread of its own, so the agent can run in the main thread. `start` returns
    once the listeners accept connections, or raises with the reason they did not start."""

    def __init__(self, state, config) -> None:
        self.state, self.config = state, config
        self.stop_request = Shutdown()
        self.ready = threading.Event()
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="server", daemon=True)

    def start(self) -> "_ServerThread":
        self.thread.start()
        while not self.ready.wait(0.05):
            if self.ended.is_set():
                raise click.ClickException(f"the server did not start: {self.error or 'it stopped'}")
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stop_request.trigger()
        self.ended.wait(timeout_s)

    def _run(self) -> None:
        loop = _new_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to `start` (SystemExit: listeners failed)
            self.error = exc
        finally:
            self.ended.set()

    async def _serve(self) -> None:
        started = asyncio.Event()
        server = asyncio.create_task(serve(self.state, self.config, self.stop_request, started))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if started.is_set():
            self.ready.set()
        waiter.cancel()
        await server


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


_DRAIN_HINT = "; press Ctrl-C again to abort them (they end `stopped`, with the reason in their console)"
_ABORT = (OutcomeKind.ABORTED, "`shipyard up` was interrupted twice (Ctrl-C) and aborted the task")
"""A person's Ctrl-C, Ctrl-C: the task ends stopped with this reason, not handed back to its queue."""


@click.command("up")
@server_options
@click.option("--queue", "queues", multiple=True, help="Queues for the agent (default: the default queue).")
@click.option("--no-agent", is_flag=True, help="Start only the server.")
def up_cmd(config_file, queues, no_agent, **overrides) -> None:
    """Start the embedded server and an agent on the default queue, ready to take work."""
    config = config_from_cli(config_file, **overrides)
    ensure_ports_free(config)    # before anything is written: a busy port fails at once, naming its holder
    state = create_state(config)
    seeded = seed_credentials(state, config)
    access, secret = _agent_credentials(state, config.data_dir)
    shutdown = Shutdown().install()   # signals: the agent drains first, then the server stops
    server = _ServerThread(state, config).start()
    conf_path = _write_client_conf(config.data_dir, config, access, secret)   # only for a server that runs
    click.echo(banner(config, seeded))
    click.echo(f"\nClient config for the SDK and the shipyard CLI (the local agent's key, role agent: "
               f"not an admin key):\n  export CLEARML_CONFIG_FILE={conf_path}")
    try:
        if no_agent:
            shutdown.event.wait()
        else:
            _run_agent(conf_path, list(queues), shutdown)
    finally:
        server.stop()


def _run_agent(conf_path: Path, queues: list[str], shutdown: Shutdown) -> None:
    """The agent in this thread until a signal: it drains on the first, aborts its tasks on the second."""
    from agent.daemon.loop import Daemon
    from shipyard.client.api import ApiClient

    env = {**os.environ, "CLEARML_CONFIG_FILE": str(conf_path)}
    for name in ("CLEARML_API_HOST", "CLEARML_FILES_HOST", "CLEARML_WEB_HOST",
                 "CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"):
        env.pop(name, None)
    settings = load_settings(env=env)
    with ApiClient.from_settings(settings) as api:
        Daemon(api, settings, queues, shutdown=shutdown, echo=click.echo,
               drain_hint=_DRAIN_HINT, shutdown_abort=_ABORT).work()
