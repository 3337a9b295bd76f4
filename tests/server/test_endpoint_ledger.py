"""The endpoint ledger (server/rpc/compat.py): every endpoint of the real clearml-server schema is
implemented or declared, never both, the table in docs/compatibility.md is current, and a declared
unsupported endpoint answers as such over HTTP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.rpc import compat


@pytest.fixture(scope="module")
def registered() -> set[str]:
    return compat.implemented()


def test_every_schema_endpoint_is_implemented_or_declared(registered):
    undeclared = [n for n in compat.schema_endpoints() if compat.state(n, registered) == compat.UNDECLARED]
    assert not undeclared, ("endpoints of the ClearML schema neither implemented nor declared in "
                            f"UNSUPPORTED or NOT_YET (server/rpc/compat.py): {undeclared}")


def test_no_endpoint_is_both_implemented_and_declared(registered):
    both = sorted((compat.UNSUPPORTED.keys() | compat.NOT_YET.keys()) & registered)
    assert not both, f"implemented endpoints still declared in UNSUPPORTED/NOT_YET (server/rpc/compat.py): {both}"


def test_the_ledger_has_no_problems(registered):
    assert compat.problems(registered) == []


def test_problems_name_an_undeclared_and_a_doubly_declared_endpoint():
    schema = {"tasks.create": {}, "tasks.brand_new": {}, "serving.get_endpoints": {}}
    found = compat.problems({"tasks.create", "serving.get_endpoints"}, schema)
    assert any(line.startswith("tasks.brand_new: in the schema, but neither") for line in found)
    assert "serving.get_endpoints: implemented, so it must leave UNSUPPORTED/NOT_YET" in found


def test_schema_list_is_the_real_one():
    schema = compat.schema_endpoints()
    assert len(schema) >= 200 and not any(n.split(".")[0].startswith("_") for n in schema)
    assert schema["tasks.get_all_ex"]["internal"] and not schema["tasks.create"]["internal"]
    assert schema["tasks.enqueue"]["versions"][0] == "1.5" and "2.23" in schema["projects.get_all_ex"]["versions"]


def test_docs_table_is_current(registered):
    committed = compat.committed_section(compat.DOC.read_text())
    assert committed, f"docs/compatibility.md has no generated Endpoints section: run `{compat.REGENERATE}`"
    assert committed == compat.render(registered), (
        f"the Endpoints table in docs/compatibility.md is stale: run `{compat.REGENERATE}`")


def test_table_lists_shipyard_only_endpoints_apart(registered):
    section = compat.render(registered)
    per_service, _, own = section.partition("### Shipyard's own endpoints")
    only = registered - compat.schema_endpoints().keys()
    assert only, "Shipyard registers endpoints of its own (tasks.renew_lease, openapi.json, ...)"
    for name in only:
        assert f"| `{name}` |" in own and f"`{name}`" not in per_service
    assert "| `tasks.renew_lease` | `server.services.leases` |" in own


def test_splice_keeps_the_rest_of_the_document():
    section = f"{compat.BEGIN}\nnew\n{compat.END}\n"
    doc = f"# Title\n\nbefore\n\n{compat.BEGIN}\nold\n{compat.END}\n\n## After\n"
    assert compat.splice(doc, section) == f"# Title\n\nbefore\n\n{section}\n## After\n"
    assert compat.splice("# Title\n", section) == f"# Title\n\n{section}"


@pytest.mark.parametrize("name", ["serving.get_endpoints", "users.create", "storage.set_settings"])
def test_unsupported_endpoint_answers_a_clear_error(api, name):
    resp = api.raw(name, {"method": "get"})
    meta = resp.json()["meta"]
    assert resp.status_code == 400 == meta["result_code"], meta
    assert meta["result_subcode"] == 1
    assert meta["result_msg"] == f"Endpoint {name} is not supported in Shipyard: {compat.UNSUPPORTED[name]}"
    assert meta["endpoint"]["name"] == name and resp.json()["data"] == {}


def test_unsupported_endpoint_answers_before_any_token(api):
    resp = api.raw("v2.31/serving.get_endpoints", {}, token=None)
    assert resp.status_code == 400 and "not supported in Shipyard" in resp.json()["meta"]["result_msg"]


def test_undeclared_unknown_endpoint_stays_the_real_404(api):
    resp = api.raw("serving.no_such_action", {})
    assert resp.status_code == 404
    assert resp.json()["meta"]["result_msg"].startswith("Unable to find endpoint for name serving.no_such_action")


def test_extractor_regenerates_the_data_file(tmp_path):
    """scripts/extract_clearml_endpoints.py, run on the clearml-server commit the data file names,
    writes the committed file again (a clearml-server git repository: $SHIPYARD_CLEARML_SERVER_GIT,
    else the reference mirror; skipped without one)."""
    source = Path(os.environ.get("SHIPYARD_CLEARML_SERVER_GIT", "/work/.mirror/allegroai+clearml-server/repo"))
    if not source.exists():
        pytest.skip(f"no clearml-server git repository at {source} (set SHIPYARD_CLEARML_SERVER_GIT)")
    commit = json.loads(compat.SCHEMA_FILE.read_text())["commit"]
    checkout = tmp_path / "clearml-server"
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(source), str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "reset", "-q", "--soft", commit], check=True)  # HEAD: the commit
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", commit, "--", "apiserver/schema"], check=True)
    out = tmp_path / "endpoints.json"
    script = Path(__file__).resolve().parents[2] / "scripts" / "extract_clearml_endpoints.py"
    subprocess.run([sys.executable, str(script), str(checkout), "--out", str(out)], check=True, capture_output=True)
    assert out.read_text() == compat.SCHEMA_FILE.read_text()
