"""A bounded fuzzer over every endpoint the server lists in its `/openapi.json`.

Used by tests/security/test_fuzz.py (a short run in CI) and bench/fuzz.py (minutes).

    Baseline        data written before the fuzz with the admin key (a project, tasks with
                    hyperparameters, configuration, artifacts and a repository, a model, events,
                    a queue with an entry); `snapshot()` reads it all back for the after-check
    Pools           the ids requests are drawn from: the baseline's, scratch objects the fuzz key
                    made, ids the fuzz created on the way, and random ones
    requests_for    hypothesis strategies: a body built from the endpoint's request schema,
                    often with one field replaced by a hostile value (wrong type, deep nesting,
                    a 5,000-digit integer, lone surrogates, huge strings, NaN/Infinity), or a
                    hostile raw body, or the same as a query string
    Fuzzer.run      send them for a wall-clock budget; a Finding for every 5xx, answer outside
                    the envelope, request over 10 s, or dropped connection

The baseline is protected by construction, not by luck: requests to endpoints that change
anything (everything but the reads in READ_ONLY) never see a baseline id, so the fuzz may
delete, edit, reset, dequeue and clear whatever else it reaches. The fuzz runs with a user-role
key (some requests with the admin key or none).
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode

import requests
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.helpers import Api

SLOW_S = 10.0
READ_ONLY = re.compile(r"^(?!queues\.get_next_task$)[a-z]+\.(get_\w+|peek_task|download_task_log)$"
                       r"|^(debug\.ping|server\.info|users\.get_\w+)$")
ID_FIELDS = {"task": "task", "tasks": "task", "parent": "task", "new_task_parent": "task",
             "project": "project", "projects": "project", "new_task_project": "project",
             "model": "model", "override_model_id": "model", "queue": "queue", "queues": "queue",
             "access_key": "access_key", "attempt": "attempt"}
SERVICE_KIND = {"tasks": "task", "projects": "project", "models": "model", "queues": "queue"}


# -- values -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON fragment written as is (what Python's json cannot produce: a 5,000-digit integer)."""
    text: str


def encode(value: Any) -> str:
    """JSON text of `value`, with Raw fragments inlined; NaN, Infinity and lone surrogates are
    written the way Python's json writes them."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value)


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value] if depth % 2 else {"a": value}
    return value


SURROGATES = ("\ud800", "\udfff", "x\udc80y", "\ud83d")
HOSTILE_SCALARS = st.one_of(
    st.sampled_from([Raw("1" + "0" * 5000), Raw("-" + "9" * 400), Raw(str(2 ** 64)), Raw(str(2 ** 63)),
                     Raw(str(-2 ** 63 - 1)), Raw("1e999"), Raw("NaN"), Raw("-Infinity"), float("nan"),
                     float("inf"), 2 ** 63 - 1, -2 ** 63, 0, -1, True, None, "", " ", "\x00", "../..",
                     "%s%n", "' OR 1=1 --", "🚀" * 3, "\u202e", *SURROGATES]),
    st.builds(lambda s, c: s * c, st.sampled_from(["x", "é", "\ud800"]), st.sampled_from([300, 70_000, 1_000_000])),
    st.builds(lambda text, bad: text + bad, st.text(max_size=20), st.sampled_from(SURROGATES)),
)
HOSTILE_CONTAINERS = st.one_of(
    st.sampled_from([Raw("[" * 100_000 + "]" * 100_000), Raw("[" * 1100 + "]" * 1100), _nested(150),
                     _nested(99), [None], [[]], [{}], {"": None}, {"a": {"b": {"c": []}}}, {"\ud800": 1},
                     {"k" * 100_000: "v"}, {"a.b": {"$ne": None}}, {"__lines__": []}]),
    st.lists(HOSTILE_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=8), HOSTILE_SCALARS, max_size=3),
)
HOSTILE = st.one_of(HOSTILE_SCALARS, HOSTILE_SCALARS, HOSTILE_CONTAINERS)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3),
                           max_leaves=8)
RAW_BODIES = st.sampled_from([
    b"[" * 100_000, b"{" * 50_000, b'{"a":' * 2000 + b"1" + b"}" * 2000, b"1" + b"0" * 5000,
    b'{"name": 1' + b"0" * 5000 + b"}", b'{"name": "\\ud800"}', b'"\\udfff"', b"\xff\xfe\x00", b"\xed\xa0\x80",
    b'{"a": NaN, "b": -Infinity}', b"null", b"[]", b"[1, 2]", b'"text"', b"123", b"{", b'{"a": }', b"\x00" * 10,
    b'{"task": {"$ne": null}}', b'{"__lines__": 5}', b"\n\n\n", b'{"a":1}\n{"b":2}\n[', b"{}" * 1000,
])


# -- ids --------------------------------------------------------------------------------------


@dataclass
class Pools:
    """Ids by kind: `baseline` (reads only), `scratch` (the fuzz's own, grows as it creates)."""
    baseline: dict[str, list[str]]
    scratch: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in SERVICE_KIND.values()})

    def add(self, kind: str, value: Any) -> None:
        items = self.scratch.setdefault(kind, [])
        if isinstance(value, (str, int)) and value not in items:
            items.append(value)
            del items[:-200]

    def ids(self, kind: str, read_only: bool) -> st.SearchStrategy[Any]:
        """Mostly ids of real objects (baseline ones for reads only), sometimes unknown ones."""
        def pick(choice: int) -> Any:
            pools = [p for p in (self.scratch.get(kind), self.baseline.get(kind) if read_only else None) if p]
            if choice % 10 == 9 or not pools:
                return choice % 5 if kind == "attempt" else f"{choice:032x}"
            pool = pools[choice % len(pools)]
            return pool[(choice // 10) % len(pool)]
        return st.integers(0, 10 ** 6).map(pick)


# -- requests ---------------------------------------------------------------------------------


@dataclass
class FuzzRequest:
    endpoint: str
    body: bytes
    content_type: str = "application/json"
    query: str = ""
    token: str = "user"   # user, admin, none, garbage
    note: str = ""

    def describe(self) -> str:
        body = self.body[:300].decode("utf-8", "backslashreplace") + ("..." if len(self.body) > 300 else "")
        return f"POST /{self.endpoint}{'?' + self.query[:200] if self.query else ''} [{self.content_type}] " \
               f"({self.note}) {body}"


def _from_schema(schema: dict, name: str, pools: Pools, read_only: bool, depth: int = 0,
                 own: str | None = None) -> st.SearchStrategy:
    """Valid-looking values for a JSON schema (the subset server/schema.py writes); `own` is the
    kind of the endpoint's service (what `id`/`ids` name)."""
    kind = ID_FIELDS.get(name) or (own if name in ("id", "ids") else None)
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, name, pools, read_only, depth, own) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    type_ = schema.get("type")
    if type_ == "string":
        return pools.ids(kind, read_only) if kind else st.text(max_size=12)
    if type_ == "integer":
        return pools.ids(kind, read_only) if kind else st.integers(-5, 1000) | st.integers(-2 ** 63, 2 ** 63 - 1)
    if type_ == "number":
        return st.floats(-1e6, 1e6) | st.integers(-5, 100)
    if type_ == "boolean":
        return st.booleans()
    if type_ == "null":
        return st.none()
    if type_ == "array":
        return st.lists(_from_schema(schema.get("items", {}), name, pools, read_only, depth + 1, own),
                        min_size=1 if kind else 0, max_size=3)
    if type_ == "object" and depth < 4:
        return _object_from_schema(schema, pools, read_only, depth, own)
    return JSON_VALUES


def _object_from_schema(schema: dict, pools: Pools, read_only: bool, depth: int,
                        own: str | None) -> st.SearchStrategy:
    """A JSON object schema: its required and optional properties, plus extra keys where it allows them."""
    props = {k: _from_schema(v, k, pools, read_only, depth + 1, own) for k, v in schema.get("properties", {}).items()}
    required = {k: props.pop(k) for k in schema.get("required", []) if k in props}
    extra = schema.get("additionalProperties")
    base = st.fixed_dictionaries(required, optional=props)
    if isinstance(extra, dict):
        more = st.dictionaries(st.text(max_size=8), _from_schema(extra, "", pools, read_only, depth + 1), max_size=2)
        return st.builds(lambda a, b: {**b, **a}, base, more)
    return base


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], tuple(rest), new)}
    copy = list(value)
    copy[head] = _replace(copy[head], tuple(rest), new)
    return copy


@st.composite
def _mutated(draw: Callable, body_strategy: st.SearchStrategy, field_names: list[str]) -> tuple[dict, str]:
    body = draw(body_strategy)
    paths = _paths(body)
    hostile = draw(HOSTILE)
    if paths and draw(st.booleans()):
        path = draw(st.sampled_from(paths))
        return _replace(body, path, hostile), f"hostile at {'.'.join(map(str, path))}"
    key = draw(st.sampled_from(field_names)) if field_names else draw(st.text(max_size=8))
    return {**body, key: hostile}, f"hostile {key}"


def _query(body: dict) -> str:
    """`body` as a query string (objects left out: the server builds them from dotted keys)."""
    pairs = []
    for key, value in body.items():
        text = value if isinstance(value, str) else encode(value)
        if not isinstance(value, dict) and len(text) < 50_000:
            pairs.append((key, text))
    return urlencode(pairs, encoding="utf-8", errors="surrogatepass")


def requests_for(doc: dict, pools: Pools) -> st.SearchStrategy[FuzzRequest]:
    """Every endpoint of the OpenAPI document, each with its body strategies."""
    return st.one_of(list(endpoint_strategies(doc, pools).values()))


def endpoint_strategies(doc: dict, pools: Pools) -> dict[str, st.SearchStrategy[FuzzRequest]]:
    """Each endpoint of the OpenAPI document with its own request strategy."""
    per_endpoint = {}
    for path, item in sorted(doc["paths"].items()):
        name = path.lstrip("/")
        schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        read_only = bool(READ_ONLY.match(name))
        valid = _from_schema(schema, "", pools, read_only, own=SERVICE_KIND.get(name.split(".")[0]))
        per_endpoint[name] = _endpoint_requests(name, valid, list(schema.get("properties", {})))
    return per_endpoint


def _endpoint_requests(name: str, valid: st.SearchStrategy, fields: list[str]) -> st.SearchStrategy[FuzzRequest]:
    tokens = st.sampled_from(["user"] * 8 + ["admin", "none", "garbage"])
    lines = "application/json-lines"
    plain = st.builds(lambda b, t: FuzzRequest(name, encode(b).encode("utf-8", "surrogatepass"), token=t,
                                               note="valid"), valid, tokens)
    hostile = st.builds(lambda bn, t: FuzzRequest(name, encode(bn[0]).encode("utf-8", "surrogatepass"), token=t,
                                                  note=bn[1]), _mutated(valid, fields), tokens)
    raw = st.builds(lambda b, ct, t: FuzzRequest(name, b, ct, token=t, note="raw body"),
                    RAW_BODIES, st.sampled_from(["application/json", lines, "text/plain"]), tokens)
    query = st.builds(lambda bn, t: FuzzRequest(name, b"", query=_query(bn[0]), token=t, note="query " + bn[1]),
                      _mutated(valid, fields), tokens)
    options = [plain, hostile, hostile, hostile, raw, query]
    if name.startswith("events.add"):
        options.append(st.builds(
            lambda evs, t: FuzzRequest(name, "\n".join(encode(e) for e in evs).encode("utf-8", "surrogatepass"),
                                       lines, token=t, note="json lines"),
            st.lists(st.one_of(valid, _mutated(valid, fields).map(lambda bn: bn[0])), min_size=1, max_size=5), tokens))
    return st.one_of(options)


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str           # 5xx, envelope, slow, connection
    request: FuzzRequest
    detail: str

    def key(self) -> tuple:
        return self.kind, self.request.endpoint, re.sub(r"[0-9a-f]{32}|\d+", "N", self.detail)[:120]

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail[:300]}\n    {self.request.describe()}"


@dataclass
class Fuzzer:
    api_url: str
    tokens: dict[str, str]          # user, admin
    pools: Pools
    findings: dict[tuple, Finding] = field(default_factory=dict)
    sent: int = 0
    per_endpoint: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    slowest: tuple[float, str] = (0.0, "")

    def __post_init__(self) -> None:
        self.http = requests.Session()
        self.doc = self.http.get(f"{self.api_url}/openapi.json", timeout=30).json()

    def run(self, budget_s: float, seed_value: int = 17, chunk: int = 100) -> None:
        """Fuzz until `budget_s` has passed: hypothesis draws `chunk` requests per seed."""
        deadline = time.monotonic() + budget_s
        strategy = requests_for(self.doc, self.pools)

        @settings(max_examples=chunk, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(request: FuzzRequest) -> None:
            if time.monotonic() < deadline and not self.stopped:
                self.send(request)

        number = seed_value
        while time.monotonic() < deadline and not self.stopped:
            seed(number)(one)()
            number += 1
        self.cover(seed_value)

    def cover(self, seed_value: int, examples: int = 10) -> None:
        """Endpoints the random draw never picked (a slow machine, a grown API) each get a few
        requests of their own, so every endpoint is fuzzed whatever the budget allowed."""
        strategies = endpoint_strategies(self.doc, self.pools)
        for name in self.unreached():
            if self.stopped or name not in strategies:
                continue

            @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(strategies[name])
            def one(request: FuzzRequest) -> None:
                self.send(request)

            seed(seed_value)(one)()

    @property
    def stopped(self) -> bool:
        return any(f.kind == "connection" for f in self.findings.values())

    def send(self, request: FuzzRequest) -> None:
        headers = {"Content-Type": request.content_type}
        token = {"none": None, "garbage": "not-a-token"}.get(request.token, self.tokens.get(request.token))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = f"{self.api_url}/{request.endpoint}" + (f"?{request.query}" if request.query else "")
        started = time.monotonic()
        try:
            resp = self.http.request("GET" if request.query else "POST", url, data=request.body, headers=headers,
                                     timeout=(5, SLOW_S))
        except requests.Timeout:
            return self._found("slow", request, f"no answer within {SLOW_S:.0f} s")
        except requests.ConnectionError as exc:
            return self._found("connection", request, f"connection failed: {exc}")
        finally:
            self.sent += 1
            self.per_endpoint[request.endpoint] = self.per_endpoint.get(request.endpoint, 0) + 1
        elapsed = time.monotonic() - started
        self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
        self.slowest = max(self.slowest, (elapsed, request.endpoint))
        self._check(request, resp, elapsed)

    def _check(self, request: FuzzRequest, resp: requests.Response, elapsed: float) -> None:
        if elapsed > SLOW_S:
            self._found("slow", request, f"answered after {elapsed:.1f} s")
        if resp.status_code >= 500:
            self._found("5xx", request, f"{resp.status_code}: {resp.text[:300]}")
            return
        if resp.status_code == 200 and request.endpoint == "events.download_task_log":
            return
        try:
            meta = resp.json()["meta"]
            assert meta["result_code"] == resp.status_code
        except (ValueError, KeyError, TypeError, AssertionError):
            return self._found("envelope", request, f"{resp.status_code} outside the envelope: {resp.text[:200]}")
        if resp.status_code == 200:
            self._learn(request.endpoint, resp.json().get("data") or {})

    def _learn(self, endpoint: str, data: dict) -> None:
        """Ids the fuzz created go to its scratch pools (so later requests reach real objects)."""
        service, _, action = endpoint.partition(".")
        if action in ("create", "clone") and service in SERVICE_KIND:
            self.pools.add(SERVICE_KIND[service], data.get("id"))
        elif endpoint == "auth.create_credentials":
            self.pools.add("access_key", data.get("access_key"))
        elif endpoint == "queues.get_next_task" and isinstance(data.get("lease"), dict):
            self.pools.add("attempt", data["lease"].get("attempt"))

    def _found(self, kind: str, request: FuzzRequest, detail: str) -> None:
        finding = Finding(kind, request, detail)
        self.findings.setdefault(finding.key(), finding)

    def unreached(self) -> list[str]:
        return sorted(p.lstrip("/") for p in self.doc["paths"] if p.lstrip("/") not in self.per_endpoint)

    def report(self) -> str:
        lines = [f"{self.sent} requests to {len(self.per_endpoint)} endpoints, answers "
                 f"{dict(sorted(self.statuses.items()))}, {len(self.findings)} distinct problems; slowest answer "
                 f"{self.slowest[0]:.2f} s ({self.slowest[1]})"]
        lines += [str(f) for f in self.findings.values()]
        return "\n".join(lines)


# -- the baseline -----------------------------------------------------------------------------


@dataclass
class Baseline:
    api: Api
    ids: dict[str, list[str]] = field(default_factory=dict)

    def write(self) -> "Baseline":
        api = self.api
        project = api.call("projects.create", {"name": f"fuzz-baseline-{uuid.uuid4().hex[:8]}",
                                               "description": "must survive the fuzz"})["id"]
        task = api.call("tasks.create", {
            "name": "baseline", "type": "training", "project": project, "tags": ["keep"],
            "script": {"repository": "https://example.com/org/repo.git", "branch": "main", "entry_point": "train.py",
                       "requirements": {"pip": "six\n"}},
            "hyperparams": {"Args": {"lr": {"section": "Args", "name": "lr", "value": "0.1"}}},
            "configuration": {"cfg": {"name": "cfg", "value": "a: 1", "type": "yaml"}}})["id"]
        api.call("tasks.add_or_update_artifacts", {"task": task, "artifacts": [
            {"key": "data", "type": "custom", "uri": "https://files/data.bin", "content_size": 12}]})
        model = api.call("models.create", {"name": "baseline-model", "uri": "https://files/model.pt", "task": task,
                                           "project": project, "labels": {"cat": 1},
                                           "metadata": [{"key": "epochs", "type": "int", "value": "3"}]})["id"]
        api.events([{"type": "training_stats_scalar", "task": task, "iter": i, "metric": "loss", "variant": "train",
                     "value": 1.0 / (i + 1), "timestamp": 1_700_000_000_000 + i} for i in range(5)]
                   + [{"type": "log", "task": task, "level": "info", "msg": f"line {i}", "worker": "w",
                       "timestamp": 1_700_000_000_000 + i} for i in range(5)])
        queue = api.call("queues.create", {"name": f"fuzz-baseline-{uuid.uuid4().hex[:8]}"})["id"]
        queued = api.call("tasks.create", {"name": "baseline-queued", "type": "training", "project": project})["id"]
        api.call("tasks.enqueue", {"task": queued, "queue": queue})
        self.ids = {"project": [project], "task": [task, queued], "model": [model], "queue": [queue]}
        return self

    def snapshot(self) -> dict:
        api, ids = self.api, self.ids
        task = ids["task"][0]
        return {
            "project": api.call("projects.get_by_id", {"project": ids["project"][0]}),
            "tasks": [api.call("tasks.get_by_id", {"task": t}) for t in ids["task"]],
            "model": api.call("models.get_by_id", {"model": ids["model"][0]}),
            "queue": api.call("queues.get_by_id", {"queue": ids["queue"][0]}),
            "log": api.call("events.get_task_log", {"task": task, "batch_size": 100})["events"],
            "scalars": api.call("events.scalar_metrics_iter_histogram", {"task": task}),
        }


def scratch_pools(api: Api, baseline: dict[str, list[str]]) -> Pools:
    """Objects of the fuzz key's own, so mutating requests reach real documents."""
    pools = Pools(baseline)
    project = api.call("projects.create", {"name": f"fuzz-scratch-{uuid.uuid4().hex[:8]}"})["id"]
    pools.add("project", project)
    for name in ("scratch-a", "scratch-b"):
        task = api.call("tasks.create", {"name": name, "type": "training", "project": project,
                                         "hyperparams": {"Args": {"x": {"section": "Args", "name": "x", "value": "1"}}}})
        pools.add("task", task["id"])
    api.call("tasks.add_or_update_artifacts", {"task": pools.scratch["task"][0],
                                               "artifacts": [{"key": "a", "type": "custom"}]})
    api.events([{"type": "training_stats_scalar", "task": pools.scratch["task"][0], "iter": 1, "metric": "m",
                 "variant": "v", "value": 1.0}])
    pools.add("model", api.call("models.create", {"name": "scratch", "task": pools.scratch["task"][0]})["id"])
    queue = api.call("queues.create", {"name": f"fuzz-scratch-{uuid.uuid4().hex[:8]}"})["id"]
    pools.add("queue", queue)
    api.call("tasks.enqueue", {"task": pools.scratch["task"][1], "queue": queue})
    return pools


def user_key(admin: Api) -> tuple[str, str]:
    created = admin.call("auth.create_credentials", {"label": "fuzz"})
    return created["access_key"], created["secret_key"]


@dataclass
class Session:
    """One fuzz run against a running server: what it sent and whether the baseline survived."""
    fuzzer: Fuzzer
    intact: bool
    elapsed_s: float


def fuzz_server(server: Any, seconds: float, seed_value: int) -> Session:
    """Write the baseline with the admin key, fuzz every endpoint for `seconds` (mostly with a
    user key), then compare the baseline with what was written."""
    admin = server.api()
    baseline = Baseline(admin).write()
    before = baseline.snapshot()
    user = Api(server.api_url, *user_key(admin))
    fuzzer = Fuzzer(server.api_url, {"user": user.token, "admin": admin.token}, scratch_pools(user, baseline.ids))
    started = time.monotonic()
    fuzzer.run(seconds, seed_value=seed_value)
    elapsed = time.monotonic() - started
    return Session(fuzzer, not fuzzer.stopped and baseline.snapshot() == before, elapsed)
