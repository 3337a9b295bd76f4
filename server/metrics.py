"""Prometheus `/metrics` on the API listener, in the text exposition format (version 0.0.4).

    shipyard_build_info{version}                          1
    shipyard_queue_depth{queue, queue_id}                 tasks waiting in each queue (0 for empty ones)
    shipyard_tasks{status}                                tasks by status
    shipyard_tasks_leased                                 tasks an agent holds a lease on
    shipyard_workers                                      workers seen within the worker timeout
    shipyard_api_requests_total{endpoint, code}           API calls answered, by result code
    shipyard_api_request_duration_seconds{endpoint}       histogram of API call latency
    shipyard_replica_info{replica}                        1; names the replica answering (docs/replicas.md)
    shipyard_replica_leader{replica}                      1 on the replica running the lease reaper
    shipyard_replica_listener_up{replica}                 1 while its LISTEN/NOTIFY connection is up (PostgreSQL)
    shipyard_long_polls_waiting{replica}                  queues.get_next_task calls waiting on this replica
    shipyard_long_poll_pops_skipped_total{replica}        their tries answered without the database: every queue
                                                          known empty (PostgreSQL; server/notify.py)

Database-wide figures are the same on every replica; request counts and the replica_* families
are this replica's own (scrape every replica, not the load balancer).

The page is public, like the ClearML endpoints marked public (`debug.ping`): it carries
counts and queue names, no task contents or credentials, and a Prometheus scraper cannot do
ClearML's login. Where the API port is reachable from outside, block `/metrics` at the proxy
(docs/operations.md). Scrapes never go through the API's request path, so they are not
counted in the request metrics.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from sqlalchemy import func, select
from starlette.responses import PlainTextResponse

from server.rpc import registry
from server.state import _BUCKETS, ServerState  # the bucket bounds RequestMetrics counts into
from server.storage import tables as t
from shipyard import __version__, clock

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PATH = "/metrics"
OTHER_ENDPOINT = "other"  # unknown paths are folded into one label, so they cannot grow the page

ASGIApp = Callable[[dict, Any, Any], Awaitable[None]]


def with_metrics(app: ASGIApp, state: ServerState) -> ASGIApp:
    """`app`, with GET /metrics answered before it (ClearML paths are `/service.action`)."""

    async def asgi(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] in ("GET", "HEAD"):
            page = await state.handlers.run(render, state) if state.handlers else render(state)  # scans: off the loop
            response = PlainTextResponse(page, media_type=CONTENT_TYPE)
            await response(scope, receive, send)
            return
        await app(scope, receive, send)

    return asgi


def render(state: ServerState) -> str:
    """The whole page: three GROUP BYs and a count (on the handler pool when the server has one)."""
    page = _Page()
    page.gauge("shipyard_build_info", "Shipyard version of this server.", [({"version": __version__}, 1)])
    depths, by_status, leased, workers = _store_figures(state)
    page.gauge("shipyard_queue_depth", "Tasks waiting in each queue.", depths)
    page.gauge("shipyard_tasks", "Tasks by status.", by_status)
    page.gauge("shipyard_tasks_leased", "Tasks an agent holds a lease on.", [({}, leased)])
    page.gauge("shipyard_workers", "Workers that reported within the worker timeout.", [({}, workers)])
    _request_metrics(page, state)
    _replica_metrics(page, state)
    return page.text()


def _replica_metrics(page: _Page, state: ServerState) -> None:
    me = {"replica": state.replica}
    page.gauge("shipyard_replica_info", "The replica that answered this scrape.", [(me, 1)])
    page.gauge("shipyard_replica_leader", "1 on the replica that runs the lease reaper.", [(me, int(state.is_leader))])
    if state.coordinator is not None:
        page.gauge("shipyard_replica_listener_up", "1 while the LISTEN/NOTIFY connection is up.",
                   [(me, int(state.coordinator.connected))])
    page.gauge("shipyard_long_polls_waiting", "queues.get_next_task calls waiting on this replica.",
               [(me, state.notifier.waiting)])
    page.counter("shipyard_long_poll_pops_skipped_total",
                 "queues.get_next_task tries answered without the database (every queue known empty).",
                 [(me, state.notifier.skipped_pops)])


def _store_figures(state: ServerState) -> tuple[list, list, int, int]:
    depth = (select(t.queues.c.id, t.queues.c.name, func.count(t.queue_entries.c.seq))
             .select_from(t.queues.outerjoin(t.queue_entries, t.queue_entries.c.queue == t.queues.c.id))
             .group_by(t.queues.c.id, t.queues.c.name).order_by(t.queues.c.name))
    statuses = select(t.tasks.c.status, func.count()).group_by(t.tasks.c.status).order_by(t.tasks.c.status)
    leased = select(func.count()).select_from(t.tasks).where(t.tasks.c.lease_expires.is_not(None))
    alive = (select(func.count()).select_from(t.workers)
             .where(t.workers.c.last_activity >= clock.now() - state.worker_timeout_s))
    with state.store.tx() as conn:
        depths = [({"queue": name, "queue_id": qid}, n) for qid, name, n in conn.execute(depth)]
        by_status = [({"status": status}, n) for status, n in conn.execute(statuses)]
        return depths, by_status, conn.execute(leased).scalar_one(), conn.execute(alive).scalar_one()


def _request_metrics(page: _Page, state: ServerState) -> None:
    metrics = state.metrics
    counts: dict[tuple[str, int], int] = {}
    for (endpoint, code), n in list(metrics.counts.items()):
        key = (_endpoint_label(endpoint), code)
        counts[key] = counts.get(key, 0) + n
    page.counter("shipyard_api_requests_total", "API calls answered, by endpoint and result code.",
                 [({"endpoint": e, "code": str(c)}, n) for (e, c), n in sorted(counts.items())])
    rows: dict[str, list[int]] = {}
    sums: dict[str, float] = {}
    for endpoint, row in list(metrics.buckets.items()):
        label = _endpoint_label(endpoint)
        merged = rows.setdefault(label, [0] * len(row))
        rows[label] = [a + b for a, b in zip(merged, row, strict=True)]
        sums[label] = sums.get(label, 0.0) + metrics.sums.get(endpoint, 0.0)
    page.histogram("shipyard_api_request_duration_seconds", "API call latency, from request to answer.",
                   {label: (rows[label], sums[label]) for label in sorted(rows)})


def _endpoint_label(endpoint: str) -> str:
    return endpoint if registry.lookup(endpoint) is not None else OTHER_ENDPOINT


class _Page:
    """Builds the exposition text: HELP and TYPE once per metric, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        self._family(name, "gauge", help_text, samples)

    def counter(self, name: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        self._family(name, "counter", help_text, samples)

    def histogram(self, name: str, help_text: str, rows: dict[str, tuple[list[int], float]]) -> None:
        """`rows`: endpoint -> (per-bucket counts as RequestMetrics keeps them, +Inf last; sum)."""
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for endpoint, (row, total) in rows.items():
            cumulative = 0
            for bound, n in zip([*map(_number, _BUCKETS), "+Inf"], row, strict=True):
                cumulative += n
                self.lines.append(f"{name}_bucket{_labels({'endpoint': endpoint, 'le': bound})} {cumulative}")
            self.lines.append(f"{name}_sum{_labels({'endpoint': endpoint})} {_number(total)}")
            self.lines.append(f"{name}_count{_labels({'endpoint': endpoint})} {cumulative}")

    def _family(self, name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))

