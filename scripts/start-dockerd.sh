#!/usr/bin/env bash
# Install (if missing) and start a Docker engine on this machine, then wait until it answers.
# The machines ship only the docker client; Debian's docker.io package brings the engine.
# Idempotent: an engine that already answers is left alone. Exits non-zero, with the reason
# on stderr, when the engine cannot be started (no root, no package, dockerd refuses).
#
#   usage: scripts/start-dockerd.sh
set -euo pipefail
log=/var/log/shipyard-dockerd.log
if docker info >/dev/null 2>&1; then
  docker info --format 'dockerd {{.ServerVersion}} already running'; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "start-dockerd: not root, cannot start a Docker engine" >&2; exit 1
fi
if ! command -v dockerd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
(setsid dockerd >"$log" 2>&1 &)
for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
if ! docker info >/dev/null 2>&1; then
  echo "start-dockerd: dockerd did not answer within 60 s; last lines of $log:" >&2
  tail -n 20 "$log" >&2 || true
  exit 1
fi
docker info --format 'dockerd {{.ServerVersion}} ready'
