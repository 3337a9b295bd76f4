#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what the tests need, then runs pytest.
# Servers, PostgreSQL clusters, agents and moto are started by the tests themselves; the
# Docker engine, which needs root and outlives a test, is started here when it is installed.
# CI (.ci/run) calls exactly this script; so does the README.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- Debian packages: "command-or-path package" pairs; missing ones are installed. ---------
apt_needs=(
  "git git"
  "/usr/lib/postgresql postgresql"
  "runuser util-linux"
  "chromium chromium"
  "systemd-analyze systemd"
  "nginx nginx"
)
missing=()
for pair in "${apt_needs[@]}"; do
  probe=${pair% *}; pkg=${pair#* }
  if [[ $probe == /* ]]; then [ -e "$probe" ] || missing+=("$pkg"); else command -v "$probe" >/dev/null || missing+=("$pkg"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages: ${missing[*]} (run as root or install them)" >&2
  fi
fi

# --- Python: the project and its test extras; the real clearml SDK and clearml-agent in ----
# --- venvs of their own (cached between runs), so their pins never shape ours. -------------
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
python3 -m tests.peers

# --- Services started here (see the note at the top). --------------------------------------

# The Docker engine (Debian's docker.io, installed if missing); tests that need it skip if it cannot start.
bash scripts/start-dockerd.sh || echo "no Docker engine here; tests that need one will skip" >&2

# Slurm and munge (Debian's slurm-wlm), installed if missing; the tests start their own cluster.
bash scripts/start-slurm.sh || echo "no Slurm here; the Slurm glue's cluster tests will skip" >&2

git config --global user.email >/dev/null 2>&1 || git config --global user.email "ci@shipyard.invalid"
git config --global user.name >/dev/null 2>&1 || git config --global user.name "Shipyard CI"

# --- Lint and types first: a new ruff or mypy finding fails the run before the slow tests. ---
# Caches live outside the repository (mypy's cache_dir is set in pyproject.toml).
ruff check --cache-dir "${XDG_CACHE_HOME:-$HOME/.cache}/shipyard/ruff" .
python3 -m mypy

# Two workers (SHIPYARD_TEST_WORKERS), each taking whole files (a file's servers and fixtures stay
# together): most tests wait on real processes, so two run in about the time of one.
python3 -m pytest -q -p no:cacheprovider -n "${SHIPYARD_TEST_WORKERS:-2}" --dist loadfile "$@"
