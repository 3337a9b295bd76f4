"""The browser harness shared by every test that drives the page (tests/web, tests/security):
Debian's `chromium` package driven by Playwright (the browser build Playwright would download is
never used), one browser per test session, a fresh context per test. Screenshots go to
$SHIPYARD_TEST_ARTIFACTS/web (default: a tmp dir).

Its fixtures are registered once, by tests/conftest.py: Playwright's sync API allows a single
instance per thread, so two conftests each with a session `browser` would clash.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import ACCESS_KEY, SECRET_KEY

CHROMIUM = os.environ.get("SHIPYARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    base = os.environ.get("SHIPYARD_TEST_ARTIFACTS")
    path = Path(base) / "web" if base else tmp_path_factory.mktemp("web-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser():
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/test.sh does)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageErrors(list):
    """Uncaught script errors and failed API calls seen by a page: a test ends with none."""


@pytest.fixture()
def page(browser, artifacts_dir, request):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors = PageErrors()
    pg.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    pg.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    pg.errors = errors
    yield pg
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        pg.screenshot(path=str(artifacts_dir / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def fill_sign_in(pg, access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> None:
    """Fill and send the sign-in form the page shows."""
    pg.wait_for_selector("#access_key")
    pg.fill("#access_key", access)
    pg.fill("#secret_key", secret)
    pg.click("#sign_in")


def sign_in(pg, base_url: str, access: str = ACCESS_KEY, secret: str = SECRET_KEY) -> None:
    pg.goto(f"{base_url}/")
    fill_sign_in(pg, access, secret)
