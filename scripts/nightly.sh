#!/usr/bin/env bash
# The long end-to-end scenarios (marked `nightly`) that the default test run leaves out to stay
# inside CI's time limit. Same setup as scripts/test.sh; pytest's later -m wins over addopts'.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/test.sh -m nightly "$@"
