#!/usr/bin/env bash
# Install (if missing) Debian's Slurm (slurm-wlm: slurmctld, slurmd, the client commands) and
# munge, so that the tests can start a single-machine cluster of their own (tests/slurm_cluster.py:
# a generated slurm.conf, its own munged socket and key, in a temporary directory). Nothing is
# started here and no system service is enabled: the packages' own units are left stopped.
# Exits non-zero, with the reason on stderr, when the packages cannot be installed (no root,
# no package); the Slurm tests then skip.
#
#   usage: scripts/start-slurm.sh
set -euo pipefail
if command -v sbatch >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
   && command -v munged >/dev/null && command -v mungekey >/dev/null; then
  echo "slurm $(dpkg-query -W -f='${Version}' slurm-wlm 2>/dev/null) and munge already installed"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "start-slurm: not root, cannot install slurm-wlm and munge" >&2; exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
# The packages may start their system services with the stock config; the tests run their own.
for unit in slurmctld slurmd munge; do
  (command -v systemctl >/dev/null && systemctl stop "$unit" >/dev/null 2>&1) || true
done
echo "slurm $(dpkg-query -W -f='${Version}' slurm-wlm 2>/dev/null) and munge installed"
