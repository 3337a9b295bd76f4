"""The boot script a cloud machine runs: install the agent, start it, power off when it ends.

The only secret in it is the machine's own API key, minted for this machine alone: it
expires unless the autoscaler keeps renewing it, and is revoked when the machine is
terminated. No admin key, no git password: the agent asks the server for what tasks need.
The key is written to a root-only file and handed to the agent through its environment.
"""
from __future__ import annotations

import shlex

from autoscaler.provider import AgentBootstrap

MAX_BYTES = 16 * 1024  # EC2's limit on user data


def render(bootstrap: AgentBootstrap, *, autoscaler: str) -> str:
    env_lines = "\n".join(f"{key}={shlex.quote(value)}" for key, value in sorted(bootstrap.env().items()))
    daemon = " ".join(shlex.quote(arg) for arg in bootstrap.daemon_args())
    script = f"""#!/bin/bash
# Shipyard agent {bootstrap.worker_id}, started by autoscaler {autoscaler}.
# CLEARML_API_ACCESS_KEY below belongs to this machine only; it expires at
# {bootstrap.credential_expires or "(no expiry)"} unless renewed and is revoked when the machine ends.
set -euo pipefail
umask 077
mkdir -p /etc/shipyard
cat > /etc/shipyard/agent.env <<'SHIPYARD_ENV'
{env_lines}
SHIPYARD_ENV
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv git >/dev/null
  else
    dnf install -y -q python3 git || yum install -y -q python3 git
  fi
fi
python3 -m venv /opt/shipyard
/opt/shipyard/bin/pip install -q {shlex.quote(bootstrap.package)}
set -a; . /etc/shipyard/agent.env; set +a
/opt/shipyard/bin/shipyard {daemon} || echo "shipyard agent exited with $?"
shutdown -h now
"""
    if len(script.encode()) > MAX_BYTES:
        raise ValueError(f"user data is {len(script.encode())} bytes, over EC2's {MAX_BYTES}")
    return script
