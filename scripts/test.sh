#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what the tests need, starts nothing that
# the tests do not start themselves (servers, PostgreSQL and agents are started per test),
# then runs pytest. CI (.ci/run) calls exactly this script; so does the README.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v git >/dev/null || need_apt+=(git)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v runuser >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing Debian packages: ${need_apt[*]} (run as root or install them)" >&2
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# The real clearml SDK and clearml-agent, each in a venv of its own (cached between runs).
python3 -m tests.peers

git config --global user.email >/dev/null 2>&1 || git config --global user.email "ci@shipyard.invalid"
git config --global user.name >/dev/null 2>&1 || git config --global user.name "Shipyard CI"

python3 -m pytest -q -p no:cacheprovider "$@"
