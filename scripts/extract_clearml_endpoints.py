"""Regenerate server/rpc/clearml_endpoints.json: every endpoint the real clearml-server's API
schema defines, with the API versions each definition carries.

The schema lives in a clearml-server checkout under apiserver/schema/services/*.conf (HOCON, one
file per service; files whose name starts with `_` hold shared definitions, not endpoints). Only
facts are kept: the endpoint's name, its versions, and whether the schema marks it `internal`
(called by the web UI rather than the SDK). No descriptions or field definitions are copied.

    git clone https://github.com/allegroai/clearml-server /tmp/clearml-server
    python3 scripts/extract_clearml_endpoints.py /tmp/clearml-server

server/rpc/compat.py reads the file; tests/server/test_endpoint_ledger.py checks every endpoint
in it is implemented or declared.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from pyhocon import ConfigFactory

OUT = Path(__file__).resolve().parent.parent / "server" / "rpc" / "clearml_endpoints.json"
VERSION_RE = re.compile(r'^"?(\d+\.\d+)"?$')


def _version_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def _endpoint(definition: dict, default: dict) -> dict:
    versions = sorted((m.group(1) for key in definition if (m := VERSION_RE.match(key))), key=_version_key)
    return {"versions": versions, "internal": bool(definition.get("internal", default.get("internal", False)))}


def service_endpoints(path: Path) -> dict[str, dict]:
    """`service.action` -> its facts; a service's `_default` block gives what an action leaves out."""
    config = ConfigFactory.parse_file(str(path), resolve=True)
    default = config.get("_default", {})
    return {f"{path.stem}.{action}": _endpoint(definition, default)
            for action, definition in config.items() if not action.startswith("_")}


def _commit(checkout: Path) -> str:
    result = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def extract(checkout: Path) -> dict:
    services = checkout / "apiserver" / "schema" / "services"
    if not services.is_dir():
        raise SystemExit(f"{services} not found: pass the root of a clearml-server checkout")
    endpoints: dict[str, dict] = {}
    for path in sorted(services.glob("*.conf")):
        if not path.name.startswith("_"):
            endpoints.update(service_endpoints(path))
    return {"source": "github.com/allegroai/clearml-server apiserver/schema/services",
            "commit": _commit(checkout), "endpoints": dict(sorted(endpoints.items()))}


def render(data: dict) -> str:
    """The JSON file, one endpoint a line (diffs of a refresh stay readable)."""
    lines = [f"  {json.dumps(name)}: {json.dumps(facts)}" for name, facts in data["endpoints"].items()]
    head = {k: v for k, v in data.items() if k != "endpoints"}
    return json.dumps(head)[:-1] + ', "endpoints": {\n' + ",\n".join(lines) + "\n}}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="root of a clearml-server checkout")
    parser.add_argument("--out", type=Path, default=OUT, help=f"the file to write (default: {OUT})")
    args = parser.parse_args(argv)
    data = extract(args.checkout)
    args.out.write_text(render(data))
    print(f"{len(data['endpoints'])} endpoints written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
