"""Envelope, routing and auth as ClearML clients expect them."""
from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import requests

from tests.helpers import ACCESS_KEY, SECRET_KEY, Api, ApiFailure


def test_envelope_shape_and_versions(server, api):
    for path in ("debug.ping", "v2.23/debug.ping", "v2.5/debug.ping", "/v2.31/debug.ping/"):
        resp = requests.get(f"{server.api_url}/{path.lstrip('/')}", timeout=5)
        body = resp.json()
        meta = body["meta"]
        assert resp.status_code == 200 == meta["result_code"]
        assert len(meta["id"]) == 32 and meta["result_msg"] == "OK" and meta["error_data"] == {}
        assert meta["endpoint"]["name"] == "debug.ping"
        assert isinstance(body["data"], dict)


def test_get_with_json_body_and_query_args(server, api):
    project = api.call("projects.create", {"name": "q-args"})["id"]
    resp = api.http.request("GET", f"{server.api_url}/v2.23/projects.get_by_id",
                            data=json.dumps({"project": project, "method": "get"}),
                            headers={"Authorization": f"Bearer {api.token}"}, timeout=5)
    assert resp.json()["data"]["project"]["name"] == "q-args"
    resp = api.http.get(f"{server.api_url}/projects.get_by_id?project={project}",
                        headers={"Authorization": f"Bearer {api.token}"}, timeout=5)
    assert resp.json()["data"]["project"]["id"] == project


def test_unknown_endpoint_is_real_404_envelope(api):
    resp = api.raw("workers.get_runtime_properties", {"worker": "w"})
    assert resp.status_code == 404
    meta = resp.json()["meta"]
    assert meta["result_code"] == 404
    assert meta["result_msg"] == "Unable to find endpoint for name workers.get_runtime_properties and version 2.31"
    assert resp.json()["data"] == {}


def test_login_token_claims(server):
    resp = requests.get(f"{server.api_url}/auth.login", auth=(ACCESS_KEY, SECRET_KEY), timeout=5)
    token = resp.json()["data"]["token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["api_version"] == "2.31" and claims["feature_set"] == "basic"
    assert claims["server_version"] and claims["exp"] > time.time()
    assert claims["identity"]["user"] == ACCESS_KEY
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


@pytest.mark.parametrize("auth", [None, "Bearer", "Bearer not-a-jwt", "expired", "foreign", "Basic"])
def test_bad_tokens_are_refused(server, api, auth):
    now = int(time.time())
    claims = {"identity": {"user": ACCESS_KEY}, "exp": now + 60, "api_version": "2.31"}
    header = {
        None: None, "Bearer": "Bearer ", "Bearer not-a-jwt": "Bearer not-a-jwt",
        "foreign": "Bearer " + jwt.encode(claims, "some-other-secret-that-is-long-enough-0123456789", algorithm="HS256"),
        "Basic": "Basic " + base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode()).decode(),
    }.get(auth)
    if auth == "expired":
        real = api.token
        payload = jwt.decode(real, options={"verify_signature": False})
        # Same key cannot be known by the test; an expired token signed by us comes from expiration_sec.
        short = requests.get(f"{server.api_url}/auth.login?expiration_sec=1", auth=(ACCESS_KEY, SECRET_KEY),
                             timeout=5).json()["data"]["token"]
        assert payload["exp"] > now
        time.sleep(2.1)
        header = f"Bearer {short}"
    hdrs = {"Authorization": header} if header else {}
    resp = requests.post(f"{server.api_url}/tasks.get_all", json={}, headers=hdrs, timeout=5)
    assert resp.status_code == 401
    assert resp.json()["meta"]["result_code"] == 401 and resp.json()["data"] == {}


def test_wrong_credentials(server):
    with pytest.raises(ApiFailure) as err:
        Api(server.api_url, ACCESS_KEY, "wrong")
    assert err.value.code == 401


def test_malformed_bodies(api):
    resp = api.raw("tasks.create", body=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and "Malformed JSON" in resp.json()["meta"]["result_msg"]
    resp = api.raw("tasks.create", body=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.create", {"name": 5, "type": "training"})
    assert err.value.code == 400 and "name" in err.value.msg
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.create", {"name": "x"})
    assert err.value.subcode == 11 and "type" in err.value.msg
    with pytest.raises(ApiFailure) as err:
        api.call("tasks.create", {"name": "x", "type": "training", "hyperparams": []})
    assert err.value.code == 400
    resp = api.raw("tasks.get_all", {}, headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 415


def test_unknown_ids(api):
    for endpoint, field, subcode in (("tasks.get_by_id", "task", 101), ("projects.get_by_id", "project", 401),
                                     ("queues.get_by_id", "queue", 701)):
        with pytest.raises(ApiFailure) as err:
            api.call(endpoint, {field: "0" * 32})
        assert (err.value.code, err.value.subcode) == (400, subcode)
        assert "0" * 32 in err.value.msg


def test_unknown_fields_are_ignored(api):
    task = api.call("tasks.create", {"name": "t1", "type": "training", "method": "get",
                                     "allow_locked": False, "whatever": {"x": 1}})["id"]
    assert len(task) == 32 and all(c in "0123456789abcdef" for c in task)


def test_server_info_advertises_extensions(api):
    info = api.call("server.info")
    assert info["api_version"] == "2.31"
    assert info["shipyard"]["extensions"]["long_poll"]["field"] == "wait_s"
