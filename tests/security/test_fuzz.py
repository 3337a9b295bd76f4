"""Attack 7 (issue 17): a bounded fuzz of every endpoint in the server's own /openapi.json.

A real server; a baseline written first with the admin key (project, tasks with parameters,
configuration, artifacts, a model, events, a queue with an entry); then hypothesis-drawn
requests with a user-role key for FUZZ_S seconds (fixed seed): valid-looking bodies, hostile
values in them, hostile raw bodies and query strings. Fails on any 5xx, answer outside the
envelope, request over 10 s or dropped connection, on an endpoint never reached, and if the
baseline is not exactly as it was. Mutating requests never see baseline ids (tests/security/
fuzzer.py), so what the fuzz deletes or edits is its own. bench/fuzz.py runs the same for minutes.
"""
from __future__ import annotations

import os

import requests

from tests.helpers import start_server
from tests.security.fuzzer import fuzz_server

FUZZ_S = float(os.environ.get("SHIPYARD_FUZZ_S", "35"))


def test_fuzz_every_endpoint_no_5xx_and_the_baseline_is_intact(tmp_path):
    server = start_server(tmp_path / "srv", env={"SHIPYARD_LONG_POLL_MAX_S": "2"})
    try:
        session = fuzz_server(server, FUZZ_S, seed_value=17)
        fuzzer = session.fuzzer
        print(fuzzer.report())
        assert not fuzzer.findings, fuzzer.report()
        assert not fuzzer.unreached(), f"endpoints never fuzzed: {fuzzer.unreached()}"
        assert requests.get(f"{server.api_url}/debug.ping", timeout=5).status_code == 200
        assert session.intact
    finally:
        server.stop()
