"""auth.create_credentials / extend_credentials / revoke_credentials on a real server process:
short-lived per-machine keys, admin only, refused the moment they are revoked or expire."""
from __future__ import annotations

import time

import pytest

from shipyard import clock
from tests.helpers import Api, ApiFailure


def mint(api: Api, label: str = "shipyard-as-test", ttl: float = 600) -> dict:
    return api.call("auth.create_credentials", {"label": label, "expires_in_s": ttl})


def test_minted_key_works_until_revoked(server, api):
    # Given a key minted for one machine
    key = mint(api, "machine-1")
    assert abs(clock.parse_iso(key["expires"]) - (time.time() + 600)) < 30
    machine = Api(server.api_url, key["access_key"], key["secret_key"])
    assert machine.call("queues.get_all") is not None
    listed = api.call("auth.revoke_credentials", {"access_key": "NO-SUCH-KEY"})
    assert listed == {"revoked": 0}
    # When it is revoked
    assert api.call("auth.revoke_credentials", {"access_key": key["access_key"]}) == {"revoked": 1}
    # Then its token is refused at once, and so is a new login
    with pytest.raises(ApiFailure) as err:
        machine.call("queues.get_all")
    assert err.value.code == 401
    with pytest.raises(ApiFailure):
        machine.login(key["access_key"], key["secret_key"])


def test_only_an_admin_mints_and_a_machine_may_revoke_only_its_own(server, api):
    key = mint(api, "machine-2")
    other = mint(api, "machine-3")
    machine = Api(server.api_url, key["access_key"], key["secret_key"])
    for endpoint, body in (("auth.create_credentials", {"label": "x"}),
                           ("auth.extend_credentials", {"access_key": key["access_key"]}),
                           ("auth.revoke_credentials", {"access_key": other["access_key"]})):
        with pytest.raises(ApiFailure) as err:
            machine.call(endpoint, body)
        assert err.value.code == 403, endpoint
    assert machine.call("auth.revoke_credentials", {"access_key": key["access_key"]}) == {"revoked": 1}


def test_expired_key_is_refused_and_extension_keeps_it_alive(server, api):
    short = mint(api, "machine-4", ttl=1.5)
    kept = mint(api, "machine-5", ttl=1.5)
    short_api = Api(server.api_url, short["access_key"], short["secret_key"])
    kept_api = Api(server.api_url, kept["access_key"], kept["secret_key"])
    extended = api.call("auth.extend_credentials", {"access_key": kept["access_key"], "expires_in_s": 600})
    assert clock.parse_iso(extended["expires"]) > clock.parse_iso(kept["expires"])
    time.sleep(2.0)
    with pytest.raises(ApiFailure) as err:
        short_api.call("queues.get_all")
    assert err.value.code == 401
    with pytest.raises(ApiFailure):
        short_api.login(short["access_key"], short["secret_key"])
    assert kept_api.call("queues.get_all") is not None
    for dead in (short["access_key"], "NO-SUCH-KEY"):  # an expired key cannot be brought back
        with pytest.raises(ApiFailure) as err:
            api.call("auth.extend_credentials", {"access_key": dead, "expires_in_s": 60})
        assert err.value.code == 400


@pytest.mark.parametrize("ttl", [0, -5, 10 * 365 * 24 * 3600])
def test_lifetime_is_bounded(api, ttl):
    with pytest.raises(ApiFailure) as err:
        mint(api, ttl=ttl)
    assert err.value.code == 400


def test_a_machine_key_is_an_agent_key_that_mints_only_task_keys(server, api):
    # Given the key the autoscaler mints for a machine it starts
    from autoscaler.control_http import HttpControlPlane
    from shipyard.client.api import ApiClient
    from tests.helpers import ACCESS_KEY, SECRET_KEY

    plane = HttpControlPlane(ApiClient(server.api_url, ACCESS_KEY, SECRET_KEY, "autoscaler-test"))
    key = plane.mint("machine-agent", 600)
    machine = Api(server.api_url, key.access_key, key.secret_key)
    # Then the agent on that machine can give each run a task key of its own (no fallback to its own key)
    minted = machine.call("auth.create_credentials", {"label": "some-task", "expires_in_s": 60})
    run = Api(server.api_url, minted["access_key"], minted["secret_key"])
    assert run.call("users.get_current_user")["user"]["role"] == "task"
    # And it can mint nothing stronger
    for role in ("user", "agent", "admin"):
        with pytest.raises(ApiFailure) as err:
            machine.call("auth.create_credentials", {"label": "x", "role": role})
        assert err.value.code == 403
