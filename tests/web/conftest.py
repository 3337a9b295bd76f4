"""Fixtures for the web page tests: a real server. The page runs in a real headless Chromium
(tests/browser.py: its `browser` and `page` fixtures are registered by tests/conftest.py)."""
from __future__ import annotations

import pytest

from tests.browser import fill_sign_in, sign_in  # noqa: F401  (the web tests import them from here)
from tests.helpers import start_server


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("web-server"))
    yield srv
    srv.stop()
