"""What a waiting `shipyard daemon` loads (issue 24: the idle agent's memory).

The CLI imports a command's module only when that command runs, and the API client reads a
token's claims without PyJWT, so an idle daemon never carries the server (SQLAlchemy, uvicorn,
Starlette), the autoscaler, boto3, Docker's client or `cryptography`. Figures: docs/benchmarks.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import jwt
import pytest

from shipyard.cli import COMMANDS, cli
from shipyard.client.api import _decode_claims

HEAVY = ("sqlalchemy", "uvicorn", "starlette", "server", "autoscaler", "scheduler", "boto3", "botocore",
         "docker", "jwt", "cryptography", "git", "psycopg")

PROBE = """
import json, sys
from shipyard.cli import cli
import click
cmd = cli.get_command(click.Context(cli), "daemon")
import agent.daemon.loop
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))
"""


def test_the_daemon_command_loads_none_of_the_heavy_packages():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_named_command_resolves(name):
    import click

    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.name == name


def test_claims_are_read_without_pyjwt_as_pyjwt_reads_them():
    now = int(time.time())
    token = jwt.encode({"exp": now + 60, "iat": now, "identity": {"user": "u"}}, "k" * 32, algorithm="HS256")
    assert _decode_claims(token) == jwt.decode(token, options={"verify_signature": False})
    for bad in ("", "a.b", "not.a.jwt", "a.%%%.c", "x." + "e30" + ".y"):   # e30 = "{}"
        assert isinstance(_decode_claims(bad), dict)
