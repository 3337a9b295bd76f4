"""The agent's Prometheus metrics: `shipyard daemon --metrics-port [HOST:]PORT`.

    shipyard_agent_info{worker, version}                      1
    shipyard_agent_tasks_started_total                        tasks pulled from a queue
    shipyard_agent_tasks_total{status}                        tasks ended, by final status
    shipyard_agent_task_duration_seconds                      histogram, pull to final status
    shipyard_agent_env_builds_total{cache}                    Python environments made ready: hit | miss
    shipyard_agent_env_build_duration_seconds{cache}          histogram of the same
    shipyard_agent_log_lines_total{path}                      task console lines: shipped | spooled | rejected
    shipyard_agent_log_spool_bytes                            bytes in spool files now (the server was away)

One `AgentMetrics` per daemon: `shipyard daemon --metrics-port` makes it, serves it with
`MetricsServer` and hands it to the Daemon. The daemon tells what happens through its console
lines (`echo`: "task T pulled from Q", "task T completed in 1.23s: ...", "shipyard: environment
ready in 0.41s (cache hit)"); the Daemon passes its echo through `metrics.tap(echo)`, which reads
those, so the run loop carries no metrics code. Log line counts come from a run's `ShipStats`,
handed to `record_log_shipping(stats)` when its shipper closes (the Daemon gives each TaskRun
that method as a callback); until a run does that the family is left out (not shown as zeros).
The spool gauge is read from the work dir at scrape time. The page is served by a stdlib HTTP
server on a thread.
"""
from __future__ import annotations

import contextlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from shipyard import __version__
from shipyard.errors import ConfigError

BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
ENV_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_PULLED = re.compile(r"^task (?P<task>\S+) pulled from ")
_ENDED = re.compile(r"^task (?P<task>\S+) (?P<status>[a-z_]+) in (?P<seconds>[0-9.]+)s: ")
_ENV = re.compile(r"environment ready in (?P<seconds>[0-9.]+)s \((?P<how>cache hit|built)\)")


class Histogram:
    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1


class AgentMetrics:
    """Counters and histograms of one daemon; thread-safe (task threads report concurrently)."""

    def __init__(self, worker: str, spool_dir: Path | None = None):
        self.worker = worker
        self.spool_dir = spool_dir
        self._lock = threading.Lock()
        self.started = 0
        self.ended: dict[str, int] = {}
        self.task_seconds = Histogram(BUCKETS)
        self.env_builds: dict[str, Histogram] = {"hit": Histogram(ENV_BUCKETS), "miss": Histogram(ENV_BUCKETS)}
        self.log_lines = {"shipped": 0, "spooled": 0, "rejected": 0}
        self.log_lines_fed = False  # exported once a runner reports them, never as made-up zeros

    # -- recording ------------------------------------------------------------------------
    def task_started(self) -> None:
        with self._lock:
            self.started += 1

    def task_ended(self, status: str, seconds: float) -> None:
        with self._lock:
            self.ended[status] = self.ended.get(status, 0) + 1
            self.task_seconds.observe(seconds)

    def env_ready(self, seconds: float, cache_hit: bool) -> None:
        with self._lock:
            self.env_builds["hit" if cache_hit else "miss"].observe(seconds)

    def record_log_shipping(self, stats: Any) -> None:
        """Add one run's `agent.logship.ShipStats` (lines_shipped, lines_spooled, lines_rejected)."""
        with self._lock:
            self.log_lines_fed = True
            for path in self.log_lines:
                self.log_lines[path] += int(getattr(stats, f"lines_{path}", 0))

    def tap(self, echo: Callable[[str], None]) -> Callable[[str], None]:
        """`echo`, with every line it is given read by `observe_console` first."""

        def tapped(line: str) -> None:
            self.observe_console(line)
            echo(line)

        return tapped

    def observe_console(self, line: str) -> None:
        """Read one console line of the daemon or runner; lines that are not events are ignored."""
        if match := _ENDED.match(line):          # the daemon's lines; the runner's start "shipyard: "
            self.task_ended(match["status"], float(match["seconds"]))
        elif _PULLED.match(line):
            self.task_started()
        elif line.startswith("shipyard: ") and (match := _ENV.search(line)):
            self.env_ready(float(match["seconds"]), match["how"] == "cache hit")

    # -- the page -------------------------------------------------------------------------
    def render(self) -> str:
        with self._lock:
            lines = _family("shipyard_agent_info", "gauge", "This agent.",
                            [({"worker": self.worker, "version": __version__}, 1)])
            lines += _family("shipyard_agent_tasks_started_total", "counter", "Tasks pulled from a queue.",
                             [({}, self.started)])
            lines += _family("shipyard_agent_tasks_total", "counter", "Tasks ended, by final status.",
                             [({"status": s}, n) for s, n in sorted(self.ended.items())])
            lines += _histogram("shipyard_agent_task_duration_seconds", "Pull to final status.",
                                {(): self.task_seconds})
            lines += _family("shipyard_agent_env_builds_total", "counter",
                             "Python environments made ready, from the cache (hit) or built (miss).",
                             [({"cache": c}, sum(h.counts)) for c, h in self.env_builds.items()])
            lines += _histogram("shipyard_agent_env_build_duration_seconds", "Time to a ready environment.",
                                {(("cache", c),): h for c, h in self.env_builds.items()})
            if self.log_lines_fed:
                lines += _family("shipyard_agent_log_lines_total", "counter", "Task console lines by path.",
                                 [({"path": p}, n) for p, n in self.log_lines.items()])
        lines += _family("shipyard_agent_log_spool_bytes", "gauge",
                         "Bytes of console lines waiting in spool files (the server was unreachable).",
                         [({}, self._spool_bytes())])
        return "\n".join(lines) + "\n"

    def _spool_bytes(self) -> int:
        if self.spool_dir is None or not self.spool_dir.is_dir():
            return 0
        total = 0
        for path in self.spool_dir.iterdir():
            with contextlib.suppress(OSError):  # delivered and removed between the listing and the stat
                total += path.stat().st_size
        return total


def _family(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    return lines + [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]


def _histogram(name: str, help_text: str, series: dict[tuple, Histogram]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for labels, histogram in series.items():
        base = dict(labels)
        cumulative = 0
        for bound, n in zip([*map(_number, histogram.bounds), "+Inf"], histogram.counts, strict=True):
            cumulative += n
            lines.append(f"{name}_bucket{_labels({**base, 'le': bound})} {cumulative}")
        lines += [f"{name}_sum{_labels(base)} {_number(histogram.sum)}", f"{name}_count{_labels(base)} {cumulative}"]
    return lines


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    escape = lambda v: str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')  # noqa: E731
    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# --- serving ---------------------------------------------------------------------------------------


class MetricsServer:
    """GET /metrics on (host, port), on a daemon thread; `close()` stops it."""

    def __init__(self, metrics: AgentMetrics, host: str, port: int):
        metrics_ref = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = metrics_ref.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:  # scrapes every 15 s would flood the log
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def parse_address(value: str) -> tuple[str, int]:
    """`9108` (every interface) or `127.0.0.1:9108`."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"expected PORT or HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
