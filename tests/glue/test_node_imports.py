"""What a glue job's `shipyard execute --attempt N` loads before its task starts (issue 22: the
node's start is most of the enqueue -> first line gap over a bare sbatch job; docs/slurm.md).

A node that gets its settings from the environment (the glue's batch script) never loads the HOCON
parser, the daemon's detach/metrics machinery, the GPU inventory or requests (the API client's
lean transport is http.client's: shipyard/client/transport.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

NOT_ON_THE_NODE = ("pyhocon", "pyparsing", "unittest", "agent.daemon.detach", "agent.daemon.metrics",
                   "agent.daemon.loop", "agent.gpus.inventory", "server", "jwt", "sqlalchemy", "requests", "urllib3")

PROBE = """
import json, sys
import click
from shipyard.cli import cli
cmd = cli.get_command(click.Context(cli), "execute")
from shipyard.client.config import load_settings
load_settings()
import agent.glue.node, agent.execution.runner, agent.execution.local
print(json.dumps(sorted(sys.modules)))
"""


def test_the_node_command_loads_only_what_a_run_needs(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "SHIPYARD_"))}
    env.update(HOME=str(tmp_path), CLEARML_API_HOST="http://127.0.0.1:1", CLEARML_API_ACCESS_KEY="k",
               CLEARML_API_SECRET_KEY="s", SHIPYARD_DATA_DIR=str(tmp_path / "data"))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env,
                         cwd=tmp_path).stdout
    loaded = set(json.loads(out))
    found = {name for name in NOT_ON_THE_NODE if name in loaded or any(m.startswith(name + ".") for m in loaded)}
    assert not found, sorted(found)
