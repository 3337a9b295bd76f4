"""Several Shipyard replicas on one private PostgreSQL, behind an nginx the test starts.

    Cluster(root, replicas=2)   PgServer + N `shipyard server --db ...` processes (one data dir, so
                                the files listener's directory is shared) + nginx on free ports
    cluster.front               what clients are given: looks like tests.helpers.ServerProcess
                                (api_url, files_url, web_url, env(), api()) but points at nginx
    cluster.replicas[i]         each replica's own ServerProcess (kill it, read its /metrics)
    cluster.restart(i)          a replica killed by a test, started again on the same ports
    nginx_config(...)           the configuration, as docs/replicas.md shows it

Uses Debian's nginx (`scripts/test.sh` installs it) and PostgreSQL binaries (tests/pg.py).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests import pg
from tests.helpers import Api, ServerProcess, client_env, free_ports, start_server

_LISTENERS = ("api", "files", "web")


def available() -> bool:
    return pg.available() and bool(shutil.which("nginx") or Path("/usr/sbin/nginx").exists())


def nginx_config(prefix: Path, fronts: dict[str, int], upstreams: dict[str, list[int]]) -> str:
    """One nginx upstream and server per listener (api, files, web), each over every replica."""
    temp = "\n".join(f"    {kind}_temp_path {prefix}/{kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    blocks = []
    for name in _LISTENERS:
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in upstreams[name])
        blocks.append(f"""    upstream shipyard_{name} {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{fronts[name]};
        location / {{
            proxy_pass http://shipyard_{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}""")
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_max_body_size 0;
{temp}
{chr(10).join(blocks)}
}}
"""


@dataclass
class Front:
    """The cluster as a client sees it: nginx's three ports."""
    api_url: str
    files_url: str
    web_url: str
    data_dir: Path
    log_path: Path

    def api(self) -> Api:
        return Api(self.api_url)

    def env(self) -> dict[str, str]:
        return client_env(self.api_url, self.files_url, self.web_url)

    def stop(self) -> None:
        """Stopped with its Cluster."""


class Nginx:
    def __init__(self, root: Path, upstreams: dict[str, list[int]]):
        self.prefix = root / "nginx"
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_LISTENERS, free_ports(3), strict=True))
        (self.prefix / "nginx.conf").write_text(nginx_config(self.prefix, self.ports, upstreams))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        with open(self.prefix / "stderr.log", "wb") as stderr:  # the child keeps its own copy
            self.proc = subprocess.Popen([binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                                          "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=stderr,
                                         start_new_session=True)
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.prefix / 'stderr.log').read_text()}"
                                   f"{(self.prefix / 'error.log').read_text() if (self.prefix / 'error.log').exists() else ''}")
            try:
                requests.get(f"http://127.0.0.1:{self.ports['api']}/debug.ping", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Cluster:
    def __init__(self, root: Path | None = None, replicas: int = 2, env: dict[str, str] | None = None):
        self._own_root = root is None  # a test's tmp dir is kept, with the replicas' log, for post-mortems
        self.root = root or Path(tempfile.mkdtemp(prefix="shipyard-replicas-"))
        self.pg = pg.PgServer()
        self.url = self.pg.new_database("shipyard_replicas")
        self.env = {"SHIPYARD_LEADER_CHECK_S": "0.5", **(env or {})}
        self.replicas: list[ServerProcess] = []
        self.nginx: Nginx | None = None
        try:
            for i in range(replicas):
                self.replicas.append(self._start(i, None))
            self.nginx = Nginx(self.root, {name: [r.ports[k] for r in self.replicas]
                                           for k, name in enumerate(_LISTENERS)})
        except BaseException:
            self.stop()
            raise
        ports = self.nginx.ports
        self.front = Front(f"http://127.0.0.1:{ports['api']}", f"http://127.0.0.1:{ports['files']}",
                           f"http://127.0.0.1:{ports['web']}", self.root / "data", self.root / "data" / "server.log")

    def _start(self, i: int, ports: tuple[int, int, int] | None) -> ServerProcess:
        return start_server(self.root / "data", db=self.url, ports=ports,
                            env={**self.env, "SHIPYARD_REPLICA_NAME": f"replica-{i}"})

    def restart(self, i: int) -> ServerProcess:
        """Start replica `i` again on its ports (after a test killed it)."""
        self.replicas[i].stop(signal.SIGKILL)
        self.replicas[i] = self._start(i, self.replicas[i].ports)
        return self.replicas[i]

    def metrics(self, i: int) -> dict[str, float]:
        """Replica `i`'s own replica_* and long-poll figures, from its /metrics."""
        text = requests.get(f"{self.replicas[i].api_url}/metrics", timeout=10).text
        return {m.group(1): float(m.group(2)) for m in
                re.finditer(r"^(shipyard_(?:replica_leader|replica_listener_up|long_polls_waiting|long_poll_pops_skipped_total))\{[^}]*\} (\S+)$",
                            text, re.MULTILINE)}

    def leader(self, timeout: float = 15.0) -> int:
        """The index of the replica that leads (exactly one must)."""
        deadline = time.monotonic() + timeout
        while True:
            leading = [i for i, r in enumerate(self.replicas)
                       if r.proc.poll() is None and self.metrics(i).get("shipyard_replica_leader") == 1]
            if len(leading) == 1 or time.monotonic() > deadline:
                assert len(leading) == 1, f"replicas leading: {leading}"
                return leading[0]
            time.sleep(0.1)

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:  # all at once: each takes its shutdown grace
            if replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            replica.stop()
        self.pg.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
