"""Record what the real clearml SDK reports for its examples' plots, as Shipyard stores it.

Starts a Shipyard server in a temporary directory, runs tests/web/fixtures/sdk_reports.py with
PYTHON (a python with clearml==2.1.12, plotly, matplotlib and pandas), reads the task's scalar,
plot and debug-image events back over the API and writes them to tests/web/fixtures/sdk_events.json
(task ids and times replaced by placeholders), with the debug images' files beside it under
tests/web/fixtures/files/. tests/web/test_plots.py loads them into a fresh server and draws them.

    python3 -m venv /tmp/sdk && /tmp/sdk/bin/pip install clearml==2.1.12 plotly matplotlib pandas
    PYTHONPATH=$PWD python3 scripts/record_plot_fixtures.py /tmp/sdk/bin/python
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import unquote

import requests

from tests.compat.conftest import clean_env
from tests.helpers import Api, ServerProcess, start_server

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "web" / "fixtures"
TYPES = ["training_stats_scalar", "plot", "training_debug_image"]
VOLATILE = ("timestamp", "@timestamp", "worker", "client")


def run_sdk(python: str, server: ServerProcess, root: Path) -> str:
    env = clean_env(root / "home", server.env())
    args = [python, str(FIXTURES / "sdk_reports.py"), f"fixtures-{uuid.uuid4().hex[:6]}", str(root)]
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    ids = [line.split()[1] for line in output.splitlines() if line.startswith("TASK_ID ")]
    if proc.returncode or not ids:
        sys.exit(f"the SDK script failed ({proc.returncode}):\n{output}")
    return ids[0]


def task_events(api: Api, task_id: str) -> list[dict]:
    events: list[dict] = []
    scroll = None
    while True:
        page = api.call("events.get_task_events", {"task": task_id, "event_type": TYPES, "batch_size": 500,
                                                   "scroll_id": scroll})
        events.extend(page["events"])
        scroll = page["scroll_id"]
        if not page["events"]:
            return events


def keep_file(url: str, api: Api) -> str:
    """Save a file the server holds beside the fixtures; returns the url as {files}/<name>."""
    name = unquote(url.rsplit("/", 1)[-1]).replace(" ", "_")
    resp = requests.get(url, headers={"Authorization": f"Bearer {api.token}"}, timeout=30)
    resp.raise_for_status()
    (FIXTURES / "files").mkdir(exist_ok=True)
    (FIXTURES / "files" / name).write_bytes(resp.content)
    return "{files}/" + name


def keep_plot_files(plot_str: str, server: ServerProcess, api: Api) -> str:
    """A matplotlib imshow arrives as layout.images whose source is a file on the files server:
    the file is kept and its url replaced in the text as the SDK wrote it (no re-serializing)."""
    for image in json.loads(plot_str).get("layout", {}).get("images") or []:
        source = image.get("source") or ""
        if source.startswith(server.files_url):
            plot_str = plot_str.replace(source, keep_file(source, api))
    return plot_str


def scrub(event: dict, server: ServerProcess, api: Api) -> dict:
    event = {k: v for k, v in event.items() if k not in VOLATILE}
    event["task"] = "{task}"
    if event.get("type") == "training_debug_image":
        event["url"] = keep_file(event["url"], api)
    if event.get("type") == "plot":
        event["plot_str"] = keep_plot_files(event["plot_str"], server, api)
    return event


def versions(python: str) -> dict:
    code = "import clearml, plotly, matplotlib, pandas, numpy, json; print(json.dumps({m.__name__: m.__version__ " \
           "for m in (clearml, plotly, matplotlib, pandas, numpy)}))"
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    python = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = start_server(root / "server")
        try:
            task_id = run_sdk(python, server, root)
            api = server.api()
            events = [scrub(e, server, api) for e in task_events(api, task_id)]
        finally:
            server.stop()
    out = {"reported_by": versions(python), "events": events}
    (FIXTURES / "sdk_events.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(events)} events -> {FIXTURES / 'sdk_events.json'}")


if __name__ == "__main__":
    main()
