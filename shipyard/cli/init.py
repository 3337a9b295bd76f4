"""`shipyard init`: write a clearml.conf whose credentials were just accepted by the server.

The credentials are checked with `auth.login` before anything is written, and the written file
is read back through `agent.config` (the agent's one configuration module), so what `init`
reports is what the agent, the clearml SDK and clearml-agent will use. The file is created
with mode 0600; an existing file is left alone unless --force, which keeps it as `*.bak`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click

from shipyard.client.api import ApiClient
from shipyard.client.config import derive_servers, load_settings
from shipyard.errors import ConfigError

LOGIN_DEADLINE_S = 10.0


def render_conf(api_server: str, files_server: str, web_server: str, access_key: str, secret_key: str,
                queues: tuple[str, ...] = (), verify_ssl: bool = True) -> str:
    quote = json.dumps  # a JSON string is a valid HOCON string, escapes included
    lines = [
        "# Written by `shipyard init`; the credentials were accepted by the server when it was written.",
        "# Read by the shipyard agent and CLI, the clearml SDK and clearml-agent.",
        "# Every key: configs/clearml.conf.example",
        "api {",
        f"    api_server: {quote(api_server)}",
        f"    files_server: {quote(files_server)}",
        f"    web_server: {quote(web_server)}",
        "    credentials {",
        f"        access_key: {quote(access_key)}",
        f"        secret_key: {quote(secret_key)}",
        "    }",
        f"    verify_certificate: {'true' if verify_ssl else 'false'}",
        "}",
    ]
    if queues:
        lines += ["shipyard {", f"    queues: {json.dumps(list(queues))}", "}"]
    return "\n".join(lines) + "\n"


def check_credentials(api_server: str, access_key: str, secret_key: str, verify_ssl: bool) -> None:
    """auth.login with these credentials; AuthError (exit 4) or ServerUnreachable (exit 5) if not."""
    with ApiClient(api_server, access_key, secret_key, retry_deadline_s=LOGIN_DEADLINE_S,
                   timeout=LOGIN_DEADLINE_S, verify_ssl=verify_ssl) as api:
        api.login()


def write_conf(path: Path, text: str, *, force: bool) -> Path | None:
    """Write `text` to `path` (0600); returns the backup's path when an existing file was replaced."""
    backup = None
    if path.exists():
        if not force:
            raise ConfigError(f"{path} exists; pass --force to replace it (it is kept as {path.name}.bak)")
        backup = path.with_name(path.name + ".bak")
        shutil.copy2(path, backup)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(temporary, path)
    return backup


@click.command("init")
@click.option("--api-server", prompt="API server", default="http://localhost:8008", show_default=True,
              help="The server's API address.")
@click.option("--files-server", help="Files server (default: derived from --api-server).")
@click.option("--web-server", help="Web server (default: derived from --api-server).")
@click.option("--access-key", prompt="Access key", help="API access key (`shipyard keys create` or the web page).")
@click.option("--secret-key", prompt="Secret key", hide_input=True, help="API secret key.")
@click.option("--queue", "queues", multiple=True, help="Queue(s) `shipyard daemon` serves when given none.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), envvar="CLEARML_CONFIG_FILE",
              default=lambda: str(Path.home() / "clearml.conf"), show_default="$CLEARML_CONFIG_FILE or ~/clearml.conf",
              help="Where to write the file.")
@click.option("--force", is_flag=True, help="Replace an existing file (kept as *.bak).")
@click.option("--no-verify-ssl", is_flag=True, help="Do not verify the server's TLS certificate.")
def init_cmd(api_server, files_server, web_server, access_key, secret_key, queues, output, force,
             no_verify_ssl) -> None:
    """Write a clearml.conf with credentials checked against the server."""
    api_server = api_server.rstrip("/")
    if not (files_server and web_server):
        derived = derive_servers(api_server)
        files_server, web_server = files_server or derived[0], web_server or derived[1]
    verify_ssl = not no_verify_ssl
    check_credentials(api_server, access_key.strip(), secret_key.strip(), verify_ssl)
    text = render_conf(api_server, files_server.rstrip("/"), web_server.rstrip("/"), access_key.strip(),
                       secret_key.strip(), tuple(queues), verify_ssl)
    output = output.expanduser()
    backup = write_conf(output, text, force=force)
    settings = load_settings(config_file=output, env={"HOME": str(Path.home())})  # read back, env ignored
    click.echo(f"credentials accepted by {settings.api.api_server}; wrote {output} (mode 0600)")
    if backup:
        click.echo(f"the previous file is kept as {backup}")
    click.echo(f"use it with: export CLEARML_CONFIG_FILE={output}   (or keep it at ~/clearml.conf)")
