"""Issue 17, attacks on credentials, each performed for real against a running server:

    2   the web session cookie sent to the API port (stored HTML in an admin's browser)
    8   guessing secrets through auth.login and the web sign-in; flooding it to stall the server;
        telling unknown keys from wrong secrets; asking for a token that never expires
    12  the admin secret in /proc/PID/cmdline; a restart that brought a revoked key back to life
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import pytest
import requests

from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, ApiFailure, free_port, start_server, web_session

PROXY = {"X-Shipyard-Web": "1", "Content-Type": "application/json"}
BAD_PAIR = "Invalid credentials: unknown access key or wrong secret"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("auth-attacks"))
    yield server
    server.stop()


def login(api_url: str, access: str, secret: str, **params) -> requests.Response:
    return requests.get(f"{api_url}/auth.login", auth=(access, secret), params=params, timeout=30)


def mint(api: Api, label: str) -> tuple[str, str]:
    key = api.call("auth.create_credentials", {"label": label})
    return key["access_key"], key["secret_key"]


# --- 2: the web cookie is no token on the API port --------------------------------------------


def test_api_port_refuses_the_web_session_cookie(srv):
    admin = srv.api()
    victim, victim_secret = mint(admin, "victim")
    browser = web_session(srv)  # an admin signed in on the web page
    token = browser.cookies["shipyard_token"]
    # What a stored page's script did: call the API port, where the browser sends the same cookie
    # (cookies are not scoped by port), under either name the server used to read.
    for cookies in ({}, {"clearml_token_basic": token}):
        revoke = browser.post(f"{srv.api_url}/auth.revoke_credentials", json={"access_key": victim},
                              cookies=cookies, timeout=30)
        assert revoke.status_code == 401 and revoke.json()["meta"]["result_code"] == 401
    listing = browser.get(f"{srv.api_url}/tasks.get_all", timeout=30)
    assert listing.status_code == 401
    # The key is still alive.
    assert Api(srv.api_url, victim, victim_secret).call("users.get_current_user")["user"]["id"] == victim
    # The page's own proxy is the cookie route: without its header (what a form or a link sends) refused...
    url = f"{srv.web_url}/api/auth.revoke_credentials"
    assert browser.post(url, json={"access_key": victim}, timeout=30).status_code == 403
    assert browser.post(url, json={"access_key": victim}, timeout=30,
                        headers={**PROXY, "Origin": "http://evil.example"}).status_code == 403
    Api(srv.api_url, victim, victim_secret)
    # ...with it, it acts as the signed-in admin.
    me = browser.post(f"{srv.web_url}/api/users.get_current_user", json={}, headers=PROXY, timeout=30).json()
    assert me["data"]["user"]["id"] == ACCESS_KEY and me["data"]["user"]["role"] == "admin"
    spare, spare_secret = mint(admin, "spare")
    done = browser.post(url, json={"access_key": spare}, headers=PROXY, timeout=30).json()
    assert done["data"] == {"revoked": 1}
    with pytest.raises(ApiFailure):
        Api(srv.api_url, spare, spare_secret)


# --- 8: guessing, flooding, probing, immortal tokens ------------------------------------------


def test_guessing_a_secret_backs_off_with_retry_after(srv):
    admin = srv.api()
    target, target_secret = mint(admin, "guessed")
    other, other_secret = mint(admin, "bystander")
    answers = [login(srv.api_url, target, f"guess-{i}") for i in range(12)]
    codes = [r.status_code for r in answers]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429], codes
    throttled = answers[-1]
    assert throttled.json()["meta"]["result_code"] == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    # Even the right secret waits out the window (the guesser cannot tell when it found it)...
    assert login(srv.api_url, target, target_secret).status_code == 429
    # ...and so does the web sign-in, which shares the brake.
    page = requests.post(f"{srv.web_url}/login", data={"access_key": target, "secret_key": target_secret},
                         allow_redirects=False, timeout=30)
    assert page.status_code == 429 and "Retry-After" in page.headers and "set-cookie" not in page.headers
    # Another key signs in from the same client, and tokens issued before keep working.
    assert login(srv.api_url, other, other_secret).json()["meta"]["result_code"] == 200
    assert admin.call("users.get_current_user")["user"]["id"] == ACCESS_KEY


def test_unknown_key_and_wrong_secret_look_alike(srv):
    admin = srv.api()
    known, _ = mint(admin, "probed")

    def timed(access: str) -> tuple[float, str]:
        started = time.perf_counter()
        resp = login(srv.api_url, access, "not-the-secret")
        assert resp.status_code == 401
        return time.perf_counter() - started, resp.json()["meta"]["result_msg"]

    wrong = [timed(known) for _ in range(5)]
    unknown = [timed(f"NO-SUCH-KEY-{i}") for i in range(5)]
    assert {msg for _, msg in wrong + unknown} == {BAD_PAIR}
    wrong_s = statistics.median(t for t, _ in wrong)
    unknown_s = statistics.median(t for t, _ in unknown)
    print(f"\nmedian answer: wrong secret {wrong_s * 1000:.1f} ms, unknown key {unknown_s * 1000:.1f} ms")
    assert unknown_s > 0.4 * wrong_s  # both pay for a hash (an unknown key used to answer ~20x faster)


def test_expiration_sec_is_capped_by_the_server(srv):
    longest = 30 * 24 * 3600  # token_ttl_s, the default
    for asked, expect in ((10**12, longest), (longest + 1, longest), (120, 120)):
        token = login(srv.api_url, ACCESS_KEY, SECRET_KEY, expiration_sec=asked).json()["data"]["token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == expect, asked


@pytest.mark.timeout(120)
def test_login_flood_does_not_stall_the_server(tmp_path):
    # Brake off, so every one of the flood's attempts costs a full hash: this checks that hashing
    # runs off the event loop (with the brake on, a flood from one address is mostly 429s).
    server = start_server(tmp_path / "flood", env={"SHIPYARD_LOGIN_FAILURES_PER_KEY": "0",
                                                   "SHIPYARD_LOGIN_FAILURES_PER_ADDRESS": "0"})
    try:
        task = server.api().call("tasks.create", {"name": "before-flood", "type": "training"})["id"]
        stop = threading.Event()
        attempts = []

        def flood() -> None:
            http = requests.Session()
            while not stop.is_set():
                resp = http.get(f"{server.api_url}/auth.login", auth=(ACCESS_KEY, "wrong"), timeout=30)
                attempts.append(resp.status_code)

        threads = [threading.Thread(target=flood, daemon=True) for _ in range(16)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        pings = []
        http = requests.Session()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            started = time.perf_counter()
            assert http.get(f"{server.api_url}/debug.ping", timeout=30).status_code == 200
            pings.append(time.perf_counter() - started)
            time.sleep(0.02)
        stop.set()
        for thread in threads:
            thread.join(30)
        p95 = sorted(pings)[min(len(pings) - 1, int(0.95 * len(pings)))]
        print(f"\n/debug.ping during a 16-connection login flood: p50 {statistics.median(pings) * 1000:.1f} ms, "
              f"p95 {p95 * 1000:.1f} ms over {len(pings)} pings; {len(attempts)} wrong logins answered "
              f"({len(attempts) / 4.5:.0f}/s)")
        assert set(attempts) == {401}
        assert p95 < 0.25
        assert server.api().call("tasks.get_by_id", {"task": task})["task"]["name"] == "before-flood"
    finally:
        server.stop()


# --- 12: the admin secret on the command line; a revoked key brought back by a restart ---------


def _start(data_dir: Path, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    """`shipyard server` with exactly these credential arguments (tests.helpers always passes
    --secret-key). Returns (process, API URL, log path) once it answers, or once it has exited."""
    ports = [str(free_port()) for _ in range(3)]
    log_path = data_dir / f"server-{ports[0]}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "shipyard", "server", "--data-dir", str(data_dir),
                                 "--api-port", ports[0], "--files-port", ports[1], "--web-port", ports[2], *args],
                                stdout=log, stderr=subprocess.STDOUT, env={**base_env, **env},
                                start_new_session=True)
    url = f"http://127.0.0.1:{ports[0]}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            requests.get(f"{url}/debug.ping", timeout=1)
            return proc, url, log_path
        except requests.ConnectionError:
            time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        raise AssertionError(f"server did not start:\n{log_path.read_text()}")
    return proc, url, log_path


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(20)


def _keys(data_dir: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "shipyard", "keys", "--data-dir", str(data_dir), *args],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


@pytest.mark.timeout(180)
def test_secret_stays_off_the_command_line_and_a_revoked_key_stays_revoked(tmp_path):
    data = tmp_path / "srv"
    # The old way: the secret as an argument. It works, with a warning.
    first = start_server(data)
    try:
        assert "--secret-key on the command line is visible" in first.log_path.read_text()
        task = first.api().call("tasks.create", {"name": "kept", "type": "training"})["id"]
        spare = dict(line.split("=", 1) for line in _keys(data, "create", "--name", "spare").split())
    finally:
        first.stop()
    # The file: nothing in /proc/PID/cmdline, no warning; an active key given a new secret takes it.
    rotated = "rotated-secret-0123456789abcdefghijklmnop"
    secret_file = tmp_path / "admin.secret"
    secret_file.write_text(rotated + "\n")
    secret_file.chmod(0o600)
    proc, url, log = _start(data, ["--secret-key-file", str(secret_file)], {"SHIPYARD_ACCESS_KEY": ACCESS_KEY})
    try:
        assert proc.poll() is None, log.read_text()
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert rotated.encode() not in cmdline and SECRET_KEY.encode() not in cmdline
        assert "visible to every local user" not in log.read_text()
        admin = Api(url, ACCESS_KEY, rotated)
        assert admin.call("users.get_current_user")["user"]["role"] == "admin"
        with pytest.raises(ApiFailure):
            Api(url, ACCESS_KEY, SECRET_KEY)
        # Now the key is revoked (it leaked, say).
        assert admin.call("auth.revoke_credentials", {"access_key": ACCESS_KEY}) == {"revoked": 1}
    finally:
        _stop(proc)
    # Restarting with the revoked key is refused, and says what to do; the key stays revoked.
    proc, _, log = _start(data, ["--secret-key-file", str(secret_file)], {"SHIPYARD_ACCESS_KEY": ACCESS_KEY})
    assert proc.wait(30) != 0
    text = log.read_text()
    assert ACCESS_KEY in text and "revoked" in text and "shipyard keys create" in text
    assert any(line.startswith(ACCESS_KEY) and "revoked" in line for line in _keys(data, "list").splitlines())
    # Started with another key, the revoked one still cannot sign in, and the data is all there.
    proc, url, log = _start(data, [], {"SHIPYARD_ACCESS_KEY": spare["CLEARML_API_ACCESS_KEY"],
                                       "SHIPYARD_SECRET_KEY": spare["CLEARML_API_SECRET_KEY"]})
    try:
        assert proc.poll() is None, log.read_text()
        for secret in (rotated, SECRET_KEY):
            assert login(url, ACCESS_KEY, secret).status_code == 401
        api = Api(url, spare["CLEARML_API_ACCESS_KEY"], spare["CLEARML_API_SECRET_KEY"])
        assert api.call("tasks.get_by_id", {"task": task})["task"]["name"] == "kept"
    finally:
        _stop(proc)
