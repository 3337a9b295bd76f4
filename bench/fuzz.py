"""Fuzz every API endpoint for minutes: the long run of tests/security/test_fuzz.py.

Starts a real server (tests.helpers.start_server, SQLite in a temporary directory), writes a
baseline with the admin key (project, tasks with parameters and artifacts, a model, events, a
queue with an entry), then sends hypothesis-drawn requests - valid-looking, hostile values,
hostile raw bodies, query strings - to every endpoint of the server's /openapi.json with a
user-role key, for `--minutes`. Requests to endpoints that change anything never see a
baseline id (tests/security/fuzzer.py), so whatever the fuzz deletes is its own.

Exit status 1, with every distinct problem printed, if any request got a 5xx, an answer
outside the envelope, took over 10 s, or the server went away; or if the baseline changed.

    python -m bench.fuzz [--minutes 10] [--seed 17]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import start_server  # noqa: E402
from tests.security.fuzzer import fuzz_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shipyard-fuzz-") as tmp:
        server = start_server(Path(tmp) / "srv", env={"SHIPYARD_LONG_POLL_MAX_S": "2"})
        try:
            session = fuzz_server(server, args.minutes * 60, args.seed)
        finally:
            server.stop()
    fuzzer, intact, elapsed = session.fuzzer, session.intact, session.elapsed_s
    print(fuzzer.report())
    print(f"{fuzzer.sent / elapsed:,.0f} requests/s over {elapsed:.0f} s; endpoints never reached: "
          f"{fuzzer.unreached() or 'none'}; baseline {'intact' if intact else 'CHANGED OR UNREADABLE'}")
    return 0 if intact and not fuzzer.findings else 1


if __name__ == "__main__":
    raise SystemExit(main())
