"""Prometheus metrics of the server (/metrics on the API port) and of the agent (--metrics-port),
and JSON log lines (--log-format json)."""
from __future__ import annotations

import json
import re
import time
import uuid

import pytest
import requests

from agent.daemon.metrics import AgentMetrics, parse_address
from agent.logs.shipper import ShipStats
from tests.agent_helpers import agent_env, create_task, make_repo, start_daemon, wait_status
from tests.helpers import free_port

SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(page: str) -> dict[str, list[tuple[dict, float]]]:
    """Exposition text -> {metric name: [(labels, value)]}; checks every line is well formed."""
    samples: dict[str, list[tuple[dict, float]]] = {}
    typed = set()
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP ") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"malformed line: {line!r}"
        name = match["name"]
        assert re.sub(r"_(bucket|sum|count)$", "", name) in typed, f"{name} has no TYPE line"
        samples.setdefault(name, []).append((dict(LABEL.findall(match["labels"] or "")), float(match["value"])))
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    found = [v for got, v in samples.get(name, []) if all(got.get(k) == want for k, want in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


# --- the server ------------------------------------------------------------------------------------


def test_server_metrics_page(server, api):
    # Given a queue with two waiting tasks and a call to an endpoint that does not exist
    queue = f"ops-metrics-{uuid.uuid4().hex[:6]}"
    api.call("queues.create", {"name": queue})
    for n in range(2):
        task = api.call("tasks.create", {"name": f"m{n}", "type": "training"})["id"]
        api.call("tasks.enqueue", {"task": task, "queue_name": queue})
    requests.get(f"{server.api_url}/no.such_endpoint_{uuid.uuid4().hex}", timeout=10)
    # When Prometheus scrapes, without a token
    response = requests.get(f"{server.api_url}/metrics", timeout=10)
    # Then
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(response.text)
    assert value(samples, "shipyard_queue_depth", queue=queue) == 2
    assert value(samples, "shipyard_queue_depth", queue="default") >= 0
    assert value(samples, "shipyard_tasks", status="queued") >= 2
    assert value(samples, "shipyard_build_info", version="0.1.0") == 1
    assert value(samples, "shipyard_api_requests_total", endpoint="tasks.enqueue", code="200") >= 2
    assert value(samples, "shipyard_api_requests_total", endpoint="other", code="404") >= 1
    assert not [labels for labels, _ in samples["shipyard_api_requests_total"] if "no.such" in labels["endpoint"]]
    assert "shipyard_workers" in samples and "shipyard_tasks_leased" in samples


def test_server_latency_histogram_is_cumulative_and_consistent(server, api):
    api.call("queues.get_all", {})
    samples = parse(requests.get(f"{server.api_url}/metrics", timeout=10).text)
    buckets = [(labels["le"], v) for labels, v in samples["shipyard_api_request_duration_seconds_bucket"]
               if labels["endpoint"] == "queues.get_all"]
    counts = [v for _, v in buckets]
    assert buckets[-1][0] == "+Inf" and counts == sorted(counts)
    total = value(samples, "shipyard_api_request_duration_seconds_count", endpoint="queues.get_all")
    calls = sum(v for labels, v in samples["shipyard_api_requests_total"] if labels["endpoint"] == "queues.get_all")
    assert counts[-1] == total == calls >= 1
    assert value(samples, "shipyard_api_request_duration_seconds_sum", endpoint="queues.get_all") > 0


def test_scrapes_are_not_counted_and_other_methods_reach_the_api(server):
    before = requests.get(f"{server.api_url}/metrics", timeout=10).text
    after = requests.get(f"{server.api_url}/metrics", timeout=10).text
    assert 'endpoint="metrics"' not in after and before.count("\n") == after.count("\n")
    assert requests.post(f"{server.api_url}/metrics", timeout=10).json()["meta"]["result_code"] == 404


# --- the agent -------------------------------------------------------------------------------------


def test_agent_metrics_from_console_lines():
    metrics = AgentMetrics("w:0")
    for line in ("task abc pulled from q on slot 0", "shipyard: task abc pulled from queue q by worker w:0",
                 "shipyard: environment ready in 0.30s (cache hit)", "shipyard: environment ready in 12.50s (built)",
                 "task abc completed in 14.25s: worker execution done", "task def failed in 0.50s: exit 1",
                 "task ghi was held by this worker before it restarted: requeued"):
        metrics.observe_console(line)
    assert "shipyard_agent_log_lines_total" not in parse(metrics.render())  # no made-up zeros
    metrics.record_log_shipping(ShipStats(lines_shipped=40, lines_spooled=7, lines_rejected=1))
    samples = parse(metrics.render())
    assert value(samples, "shipyard_agent_tasks_started_total") == 1
    assert value(samples, "shipyard_agent_tasks_total", status="completed") == 1
    assert value(samples, "shipyard_agent_tasks_total", status="failed") == 1
    assert value(samples, "shipyard_agent_task_duration_seconds_count") == 2
    assert value(samples, "shipyard_agent_task_duration_seconds_sum") == 14.75
    assert value(samples, "shipyard_agent_task_duration_seconds_bucket", le="1") == 1
    assert value(samples, "shipyard_agent_env_builds_total", cache="hit") == 1
    assert value(samples, "shipyard_agent_env_builds_total", cache="miss") == 1
    assert value(samples, "shipyard_agent_env_build_duration_seconds_bucket", cache="miss", le="10") == 0
    assert value(samples, "shipyard_agent_log_lines_total", path="shipped") == 40
    assert value(samples, "shipyard_agent_log_lines_total", path="spooled") == 7


@pytest.mark.parametrize("text, address", [("9108", ("0.0.0.0", 9108)), ("127.0.0.1:9", ("127.0.0.1", 9)),
                                           ("[::1]:9108", ("::1", 9108))])
def test_metrics_addresses(text, address):
    assert parse_address(text) == address


def test_daemon_serves_metrics_and_logs_json(server, api, tmp_path):
    # Given a daemon with metrics on and JSON logs (the variable a systemd env file would set)
    port = free_port()
    env = agent_env(server, tmp_path, SHIPYARD_LOG_FORMAT="json")
    repo, commit = make_repo(tmp_path / "repo", {"hello.py": "print('hello')\n"})
    daemon = start_daemon(env, ["ops-agent-metrics"], tmp_path / "daemon.log", "--metrics-port", f"127.0.0.1:{port}")
    try:
        # When it runs one task
        task = create_task(api, "metrics", {"repository": str(repo), "version_num": commit,
                                            "entry_point": "hello.py"}, queue="ops-agent-metrics")
        assert wait_status(api, task)["status"] == "completed"
        # the agent counts a run once it has cleaned up after it, which may be just after the
        # server shows the task completed (the report goes first: issue 24's abort latency)
        deadline = time.monotonic() + 15
        while True:
            samples = parse(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
            done = [v for got, v in samples.get("shipyard_agent_tasks_total", []) if got.get("status") == "completed"]
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 404
    finally:
        assert daemon.stop() == 0
    # Then the scrape saw it
    assert value(samples, "shipyard_agent_tasks_started_total") == 1
    assert value(samples, "shipyard_agent_tasks_total", status="completed") == 1
    assert sum(v for _, v in samples["shipyard_agent_env_builds_total"]) == 1
    assert value(samples, "shipyard_agent_info", worker=env.get("CLEARML_WORKER_ID") or
                 samples["shipyard_agent_info"][0][0]["worker"]) == 1
    # And every line it wrote is one JSON object; console lines are records of shipyard.console
    records = [json.loads(line) for line in daemon.output().splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    console = [r["msg"] for r in records if r["logger"] == "shipyard.console"]
    assert any("listening on ops-agent-metrics" in m for m in console)
    assert any(re.match(rf"task {task} completed in [0-9.]+s", m) for m in console)
