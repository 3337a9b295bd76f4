"""A small Kubernetes API server on loopback for the glue's tests and bench: the engine's five paths.

    server = ApiServer(port); threading.Thread(target=server.serve_forever, daemon=True).start()
    write_kubeconfig(path, port)        # token t0ken, namespace ml

It stores what is POSTed (adding a uid), lists with label and field selectors, deletes by name,
answers 409/404 with Status bodies as the API server does, and records every request as
(method, path, query + body). `answer` forces the next reply (a 403, 422, 500 ...). `rbac()`
reads the recorded requests the way the API server's authorizer does: (group, resource, verb).
"""
from __future__ import annotations

import json
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

COLLECTIONS = {"/apis/batch/v1/namespaces/ml/jobs": ("batch", "jobs"), "/api/v1/namespaces/ml/pods": ("", "pods"),
               "/api/v1/namespaces/ml/secrets": ("", "secrets")}


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int):
        super().__init__(("127.0.0.1", port), _Handler)
        self.objects: dict[str, dict[str, dict]] = {path: {} for path in COLLECTIONS}
        self.requests: list[tuple[str, str, dict]] = []
        self.answer: tuple[int, dict] | None = None   # the next request's status and body, whatever it is

    def rbac(self) -> set[tuple[str, str, str]]:
        """What the authorizer checks for each recorded request: group, resource, verb."""
        out = set()
        for method, path, _query in self.requests:
            collection = path if path in COLLECTIONS else path.rsplit("/", 1)[0]
            verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch", "PUT": "update"}.get(method)
            verb = verb or ("list" if path in COLLECTIONS else "get")
            out.add((*COLLECTIONS[collection], verb))
        return out


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _handle(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self._body()
        self.server.requests.append((self.command, url.path, {**query, **body}))
        assert self.headers.get("Authorization") == "Bearer t0ken"
        if self.server.answer is not None:
            answer, self.server.answer = self.server.answer, None
            return self._reply(*answer)
        if url.path in COLLECTIONS:
            return self._collection(url.path, query, body)
        collection, name = url.path.rsplit("/", 1)
        if self.server.objects[collection].pop(name, None) is None:
            return self._reply(404, {"kind": "Status", "code": 404, "message": f"{name} not found"})
        return self._reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def _collection(self, path: str, query: dict, body: dict) -> None:
        store = self.server.objects[path]
        if self.command == "POST":
            name = body["metadata"]["name"]
            if name in store:
                return self._reply(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists",
                                         "message": f"{name} already exists"})
            body["metadata"]["uid"] = str(uuid.uuid4())
            store[name] = body
            return self._reply(201, body)
        wanted = dict(p.split("=", 1) for p in query.get("labelSelector", "").split(",") if p)
        name = query.get("fieldSelector", "").removeprefix("metadata.name=")
        items = [o for o in store.values() if all(o["metadata"].get("labels", {}).get(k) == v
                                                  for k, v in wanted.items()) and name in ("", o["metadata"]["name"])]
        kind = "JobList" if "jobs" in path else "PodList"
        return self._reply(200, {"kind": kind, "apiVersion": "v1", "metadata": {}, "items": items})

    do_GET = do_POST = do_DELETE = _handle


def write_kubeconfig(path: Path, port: int) -> str:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)
