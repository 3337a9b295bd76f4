"""The glue loop against InMemoryTaskServer and MemoryEngine: phases mapped back, aborts,
infrastructure requeues, rejections, an unreachable engine and a restart - in-process, each
test well under a second or two."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from agent.execution.taskkey import TaskKeys
from agent.glue.engine import Phase
from agent.glue.loop import GlueLoop
from agent.glue.memory import MemoryEngine
from agent.glue.request import GlueSettings, QueueSpec, parse_queue
from agent.taskserver.memory import InMemoryTaskServer
from shipyard.protocol import CLAIM_COUNT, RENEW_LEASES, SET_MESSAGES, START_RUN
from tests.helpers import until


def settings(**overrides) -> GlueSettings:
    base = dict(queues=(QueueSpec("gpu", gpus=1),), worker="glue:test", max_jobs=10, watch_s=0.02,
                retry_s=0.05, lease_s=30.0, grace_s=2.0, node_command=("shipyard",))
    base.update(overrides)
    return GlueSettings(**base)


@pytest.fixture
def server() -> InMemoryTaskServer:
    api = InMemoryTaskServer()
    api.call("queues.create", {"name": "gpu"})
    return api


def enqueue(api: InMemoryTaskServer, **hyper) -> str:
    section = {k: {"section": "Shipyard", "name": k, "value": str(v)} for k, v in hyper.items()}
    task = api.call("tasks.create", {"name": "t", "type": "training", "hyperparams": {"Shipyard": section}})["id"]
    queue = api.call("queues.get_all", {"name": "^gpu$"})["queues"][0]["id"]
    api.call("tasks.enqueue", {"task": task, "queue": queue})
    return task


@contextmanager
def running(api: InMemoryTaskServer, engine: MemoryEngine, **overrides) -> Iterator[GlueLoop]:
    stop = threading.Event()
    lines: list[str] = []
    loop = GlueLoop(api, engine, settings(**overrides), stop=stop, echo=lines.append,
                    task_keys=TaskKeys(api, ("glue-key", "glue-secret")), server_env={"CLEARML_API_HOST": "x"})
    loop.lines = lines  # type: ignore[attr-defined]
    thread = threading.Thread(target=loop.work, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def doc(api: InMemoryTaskServer, task: str) -> dict:
    return api.tasks[task]


def test_a_claimed_task_becomes_a_job_with_its_own_key_and_resources(server):
    engine = MemoryEngine()
    task = enqueue(server, max_runtime_s=60, cpus=2, memory_mb=512)
    with running(server, engine):
        request = until(lambda: engine.submitted and engine.submitted[0])
        until(lambda: "pending in memory job" in doc(server, task)["status_message"])
    assert request.command == ("shipyard", "execute", "--id", task, "--attempt", "1")
    assert request.gpus == 1 and request.cpus == 2 and request.memory_mb == 512
    assert request.time_limit_s == 60 + 2 + 30
    assert request.env["CLEARML_API_ACCESS_KEY"].startswith("TASKKEY")
    assert "glue-key" not in request.env.values() and request.env["CLEARML_API_HOST"] == "x"
    assert doc(server, task)["status"] == "in_progress"
    assert doc(server, task)["status_message"] == f"pending in memory job {engine.job_of(task)}: Priority"


def _hand_over_calls(api: InMemoryTaskServer, task: str) -> list[str]:
    names = ("tasks.started", "auth.create_credentials", START_RUN)
    return [endpoint for endpoint, body in api.calls if endpoint in names and body.get("task", body.get("label")) == task]


def test_the_claim_is_started_and_its_key_minted_in_one_call(server):
    engine = MemoryEngine()
    task = enqueue(server)
    with running(server, engine):
        request = until(lambda: engine.submitted and engine.submitted[0])
    assert _hand_over_calls(server, task)[0] == START_RUN   # then only the watch's own status messages
    assert "auth.create_credentials" not in _hand_over_calls(server, task)
    assert server.keys[request.env["CLEARML_API_ACCESS_KEY"]]["label"] == task


def test_claims_of_one_call_are_started_in_one_call_each_with_its_own_key(server):
    from shipyard.protocol import START_RUNS

    engine = MemoryEngine()
    tasks = [enqueue(server) for _ in range(4)]
    with running(server, engine, claim_threads=1):
        until(lambda: len(engine.submitted) == 4)
    starts = [body for endpoint, body in server.calls if endpoint == START_RUN]
    assert [sorted(run["task"] for run in body[START_RUNS]) for body in starts] == [sorted(tasks)]
    keys = {request.task_id: request.env["CLEARML_API_ACCESS_KEY"] for request in engine.submitted}
    assert len(set(keys.values())) == 4 and all(server.keys[key]["label"] == task for task, key in keys.items())


def test_a_server_without_start_run_gets_the_two_calls():
    from agent.taskserver.memory import EXTENSIONS

    api = InMemoryTaskServer(extensions={**EXTENSIONS, "task_keys": {"mint": "auth.create_credentials", "role": "task"}})
    api.call("queues.create", {"name": "gpu"})
    engine = MemoryEngine()
    task = enqueue(api)
    with running(api, engine):
        request = until(lambda: engine.submitted and engine.submitted[0])
    assert _hand_over_calls(api, task)[:2] == ["tasks.started", "auth.create_credentials"]
    assert START_RUN not in _hand_over_calls(api, task)
    assert request.env["CLEARML_API_ACCESS_KEY"].startswith("TASKKEY")


@pytest.mark.parametrize("phase, reason, status, words", [
    (Phase.FAILED, "OUT_OF_MEMORY", "failed", "user_error: memory job {job} ended OUT_OF_MEMORY: the task used more memory"),
    (Phase.FAILED, "TIMEOUT", "failed", "timed_out: memory job {job} ended TIMEOUT"),
    (Phase.FAILED, "NonZeroExitCode", "failed", "user_error: memory job {job} ended NonZeroExitCode: exit code 3"),
    (Phase.CANCELLED, "CANCELLED", "stopped", "aborted: memory job {job} was cancelled"),
    (Phase.INFRA, "NODE_FAIL", "queued", "infrastructure: memory job {job} ended NODE_FAIL"),
])
def test_a_job_that_ends_before_its_task_reported_ends_the_task(server, phase, reason, status, words):
    engine = MemoryEngine()
    task = enqueue(server)
    with running(server, engine, max_jobs=1):
        job = until(lambda: engine.jobs and engine.job_of(task))
        until(lambda: doc(server, task)["status"] == "in_progress")
        engine.set_phase(job, Phase.RUNNING)
        engine.finish(job, phase, reason, exit_code=3 if reason == "NonZeroExitCode" else None)
        until(lambda: doc(server, task)["status"] == status or len(engine.submitted) > 1)
        if phase == Phase.INFRA:   # requeued by the lease rules, then claimed again as attempt 2
            until(lambda: len(engine.submitted) == 2)
            assert engine.submitted[1].attempt == 2
    history = [c for c in server.calls if c[0] in ("tasks.failed", "tasks.stopped", "tasks.release")]
    assert words.format(job=job) in str(history)


def test_a_job_that_succeeded_leaves_the_nodes_report_alone(server):
    engine = MemoryEngine()
    task = enqueue(server)
    with running(server, engine):
        job = until(lambda: engine.jobs and engine.job_of(task))
        until(lambda: doc(server, task)["status"] == "in_progress")
        server.call("tasks.completed", {"task": task, "attempt": 1})   # what the node's execute does
        engine.finish(job, Phase.SUCCEEDED)
        until(lambda: server.keys[engine.submitted[0].env["CLEARML_API_ACCESS_KEY"]]["revoked"])
    assert doc(server, task)["status"] == "completed"


def test_abort_of_a_pending_job_cancels_it_with_the_grace_and_stops_the_task(server):
    engine = MemoryEngine()
    task = enqueue(server)
    with running(server, engine):
        job = until(lambda: engine.jobs and engine.job_of(task))
        until(lambda: "pending" in doc(server, task)["status_message"])
        server.call("tasks.stop", {"task": task})
        until(lambda: doc(server, task)["status"] == "stopped")
    assert engine.cancelled == [(job, 2.0)]
    assert "abort requested while pending" in doc(server, task)["status_reason"]


def test_abort_of_a_running_job_cancels_it_and_leaves_the_end_to_the_node(server):
    engine = MemoryEngine()
    task = enqueue(server)
    with running(server, engine):
        job = until(lambda: engine.jobs and engine.job_of(task))
        until(lambda: doc(server, task)["status"] == "in_progress")
        engine.set_phase(job, Phase.RUNNING)
        server.call("tasks.stop", {"task": task})
        until(lambda: engine.cancelled)
        server.call("tasks.stopped", {"task": task, "attempt": 1, "status_reason": "aborted: abort requested"})
    assert engine.cancelled == [(job, 2.0)]
    assert doc(server, task)["status_reason"] == "aborted: abort requested"


@pytest.mark.parametrize("hyper, words", [
    ({"engine_options": "--nodelist=n1"}, "engine option '--nodelist' is not allowed"),
    ({"gpus": 16}, "16 GPUs asked for (Shipyard/gpus)"),
    ({"cpus": "many"}, "Shipyard/cpus = 'many' is not a whole number"),
])
def test_a_task_asking_for_what_is_not_allowed_fails_at_once_and_the_glue_goes_on(server, hyper, words):
    engine = MemoryEngine(allowed_options=("--constraint",))
    bad = enqueue(server, **hyper)
    good = enqueue(server, engine_options="--constraint=a100")
    with running(server, engine):
        until(lambda: doc(server, bad)["status"] == "failed")
        until(lambda: engine.jobs and engine.job_of(good))
    assert words in doc(server, bad)["status_reason"]
    assert any(words in str(e.get("msg")) for e in server.events if e["task"] == bad)
    assert [r.task_id for r in engine.submitted] == [good]


def test_an_unreachable_engine_keeps_tasks_queued_and_says_why(server):
    engine = MemoryEngine()
    engine.down = "slurmctld: Unable to contact slurm controller"
    task = enqueue(server)
    with running(server, engine) as loop:
        until(lambda: any("cannot be reached: slurmctld" in line for line in loop.lines))
        time.sleep(0.1)
        assert doc(server, task)["status"] == "queued" and not engine.submitted
        engine.down = None
        until(lambda: engine.jobs and engine.job_of(task))
        assert any("answers again" in line for line in loop.lines)


def test_max_jobs_bounds_what_is_handed_over(server):
    engine = MemoryEngine()
    tasks = [enqueue(server) for _ in range(5)]
    with running(server, engine, max_jobs=2):
        until(lambda: len(engine.submitted) == 2)
        time.sleep(0.1)
        assert len(engine.submitted) == 2
        first = engine.job_of(tasks[0])
        server.call("tasks.completed", {"task": tasks[0], "attempt": 1})
        engine.finish(first, Phase.SUCCEEDED)
        until(lambda: len(engine.submitted) == 3)


def test_several_claimers_hand_each_task_over_once_and_never_past_max_jobs(server):
    engine = MemoryEngine()
    tasks = {enqueue(server) for _ in range(40)}
    with running(server, engine, max_jobs=25, claim_threads=4):
        until(lambda: len(engine.submitted) == 25)
        time.sleep(0.2)
        assert len(engine.submitted) == 25
        handed = [request.task_id for request in engine.submitted]
        assert len(set(handed)) == 25 and set(handed) <= tasks


def _claim_counts(api: InMemoryTaskServer) -> list[int | None]:
    return [body.get(CLAIM_COUNT) for endpoint, body in api.calls if endpoint == "queues.get_next_task"]


def test_claims_come_several_per_call_and_never_past_max_jobs(server):
    """Each call asks for as many as there is room for (here all 6 at once, from one claimer);
    with room for 6 and 9 queued, 6 are handed over until one ends, then exactly one more."""
    engine = MemoryEngine()
    tasks = [enqueue(server) for _ in range(9)]
    with running(server, engine, max_jobs=6, claim_threads=1):
        until(lambda: len(engine.submitted) == 6)
        time.sleep(0.1)
        assert len(engine.submitted) == 6 and sorted(r.task_id for r in engine.submitted) == sorted(tasks[:6])
        assert _claim_counts(server)[0] == 6
        server.call("tasks.completed", {"task": tasks[0], "attempt": 1})
        engine.finish(engine.job_of(tasks[0]), Phase.SUCCEEDED)
        until(lambda: len(engine.submitted) == 7)
        time.sleep(0.1)
        assert len(engine.submitted) == 7
    assert all(count is None or 2 <= count <= 6 for count in _claim_counts(server))   # room 1: the plain call


class _SlowEngine(MemoryEngine):
    """Every sbatch blocks until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def submit(self, request):
        self.go.wait(10)
        return super().submit(request)


def test_claims_waiting_for_a_slow_engine_stay_few(server):
    """With room for 100 jobs but an engine that takes its time, no more claims are taken than the
    submit threads and one batch per claimer (their leases must not run out while they wait)."""
    engine = _SlowEngine()
    tasks = [enqueue(server) for _ in range(20)]
    with running(server, engine, max_jobs=100, submit_threads=2, claim_batch=3, claim_threads=1):
        until(lambda: sum(1 for t in tasks if doc(server, t).get("_lease")) == 5)
        time.sleep(0.2)
        assert sum(1 for t in tasks if doc(server, t).get("_lease")) == 5
        engine.go.set()
        until(lambda: len(engine.submitted) == 20)


def test_a_server_without_claim_many_is_asked_one_claim_at_a_time():
    from agent.taskserver.memory import EXTENSIONS

    api = InMemoryTaskServer(extensions={k: v for k, v in EXTENSIONS.items() if k != "claim_many"})
    api.call("queues.create", {"name": "gpu"})
    engine = MemoryEngine()
    for _ in range(4):
        enqueue(api)
    with running(api, engine):
        until(lambda: len(engine.submitted) == 4)
    assert set(_claim_counts(api)) == {None}


def test_pending_reasons_go_in_one_call_per_watch_and_never_over_someone_elses_message(server):
    engine = MemoryEngine()
    tasks = [enqueue(server) for _ in range(3)]
    with running(server, engine):
        until(lambda: all(doc(server, t)["status_message"].startswith("pending in memory job") for t in tasks))
        doc(server, tasks[0])["status_message"] = "the node's own words"     # written by someone else meanwhile
        for task in tasks:
            engine.set_phase(engine.job_of(task), Phase.PENDING, "Resources")
        until(lambda: all(doc(server, t)["status_message"].endswith(": Resources") for t in tasks[1:]))
        time.sleep(0.1)
        assert doc(server, tasks[0])["status_message"] == "the node's own words"
    assert not [body for endpoint, body in server.calls if endpoint == "tasks.started"]   # no write per task
    batches = [body["tasks"] for endpoint, body in server.calls if endpoint == SET_MESSAGES]
    assert sum(1 for batch in batches for item in batch if item["task"] == tasks[0]) == 2   # one miss, then no more


def test_more_pending_reasons_than_one_call_takes_go_in_several(server, monkeypatch):
    from agent.glue import follow

    monkeypatch.setattr(follow, "MAX_MESSAGES", 2)     # the server refuses a longer list
    engine = MemoryEngine()
    tasks = [enqueue(server) for _ in range(3)]
    with running(server, engine):
        until(lambda: all(doc(server, t)["status_message"].startswith("pending in memory job") for t in tasks))
    batches = [body["tasks"] for endpoint, body in server.calls if endpoint == SET_MESSAGES]
    assert max(len(batch) for batch in batches) <= 2
    assert {item["task"] for batch in batches for item in batch} == set(tasks)


class _SlowToAnswerEngine(MemoryEngine):
    """`submit` answers only after a watch has listed the new job (as a busy engine may)."""

    def __init__(self):
        super().__init__()
        self.listed = threading.Event()

    def submit(self, request):
        job_id = super().submit(request)
        self.listed.clear()
        self.listed.wait(5)
        return job_id

    def statuses(self):
        found = super().statuses()
        self.listed.set()
        return found


def test_a_job_a_watch_found_before_its_submit_answered_keeps_its_pending_reasons(server):
    engine = _SlowToAnswerEngine()      # the watch "finds" the job, then the submit adopts it
    task = enqueue(server)
    with running(server, engine):
        until(lambda: doc(server, task)["status_message"].startswith("pending in memory job"))
        engine.set_phase(engine.job_of(task), Phase.PENDING, "Resources")
        until(lambda: doc(server, task)["status_message"].endswith(": Resources"), 5,
              what="the pending reason after the job was found and adopted")


def test_a_server_without_set_messages_gets_the_pending_reason_through_tasks_started():
    from agent.taskserver.memory import EXTENSIONS

    api = InMemoryTaskServer(extensions={k: v for k, v in EXTENSIONS.items() if k != "status_messages"})
    api.call("queues.create", {"name": "gpu"})
    engine = MemoryEngine()
    task = enqueue(api)
    with running(api, engine):
        until(lambda: doc(api, task)["status_message"].startswith("pending in memory job"))
    assert [b for e, b in api.calls if e == "tasks.started" and b["task"] == task]
    assert not [b for e, b in api.calls if e == SET_MESSAGES]


def test_a_restarted_glue_finds_its_jobs_and_neither_loses_nor_duplicates_a_task(server):
    engine = MemoryEngine()
    tasks = [enqueue(server) for _ in range(3)]
    with running(server, engine, max_jobs=2):
        until(lambda: len(engine.jobs) == 2)
        until(lambda: all(doc(server, t)["status"] == "in_progress" for t in tasks[:2]))
    # The glue is gone; its jobs live on. A new glue adopts them and reports their ends.
    job0 = engine.job_of(tasks[0])
    engine.set_phase(job0, Phase.RUNNING)
    with running(server, engine, max_jobs=2):
        engine.finish(job0, Phase.FAILED, "OUT_OF_MEMORY")
        until(lambda: doc(server, tasks[0])["status"] == "failed")
        until(lambda: len(engine.jobs) == 3)
    assert sorted(r.task_id for r in engine.submitted) == sorted(tasks)


def test_a_job_of_a_superseded_claim_is_cancelled(server):
    engine = MemoryEngine()
    task = enqueue(server)
    with running(server, engine, lease_s=0.2):
        job = until(lambda: engine.jobs and engine.job_of(task))
        until(lambda: doc(server, task)["status"] == "in_progress")
        server.tasks[task]["_attempt"] = 7     # the server gave the task to another claim meanwhile
        until(lambda: engine.cancelled)
    assert engine.cancelled[0][0] == job


def test_leases_are_renewed_in_one_call_per_watch(server, monkeypatch):
    from agent.glue import follow

    monkeypatch.setattr(follow, "MAX_RENEWALS", 2)   # more due than the server takes in one call: several calls
    engine = MemoryEngine()
    tasks = [enqueue(server) for _ in range(3)]
    with running(server, engine, lease_s=0.2):
        until(lambda: all(doc(server, t)["status"] == "in_progress" for t in tasks))
        before = len([1 for endpoint, _ in server.calls if endpoint == RENEW_LEASES])
        until(lambda: len([1 for endpoint, _ in server.calls if endpoint == RENEW_LEASES]) >= before + 3)
        server.tasks[tasks[0]]["_attempt"] = 7     # superseded: its job goes, the others keep their leases
        until(lambda: engine.cancelled)
    assert engine.cancelled[0][0] == engine.job_of(tasks[0]) and len(engine.cancelled) == 1
    assert "tasks.renew_lease" not in server.endpoints()
    batches = [body["tasks"] for endpoint, body in server.calls if endpoint == RENEW_LEASES]
    assert {item["task"] for batch in batches for item in batch} == set(tasks)
    assert max(len(batch) for batch in batches) <= 2
    assert len(batches) <= 2 * server.endpoints().count("tasks.get_all")   # at most one per watch and 2 jobs


def test_a_server_without_renew_many_gets_one_renewal_per_job():
    from agent.taskserver.memory import EXTENSIONS

    leases = {k: v for k, v in EXTENSIONS["leases"].items() if k != "renew_many"}
    api = InMemoryTaskServer(extensions={**EXTENSIONS, "leases": leases})
    api.call("queues.create", {"name": "gpu"})
    engine = MemoryEngine()
    tasks = [enqueue(api) for _ in range(2)]
    with running(api, engine, lease_s=0.2):
        until(lambda: {b["task"] for e, b in api.calls if e == "tasks.renew_lease"} == set(tasks))
    assert RENEW_LEASES not in api.endpoints()


def test_queue_specs_parse_and_name_the_mistake():
    assert parse_queue("gpu=2") == QueueSpec("gpu", 2) and parse_queue("cpu") == QueueSpec("cpu", 0)
    with pytest.raises(ValueError, match="whole number"):
        parse_queue("gpu=two")


def test_a_job_that_dies_before_the_task_started_gets_its_output_file_in_the_console(server, tmp_path):
    from dataclasses import replace

    engine = MemoryEngine()
    task = enqueue(server)
    output = tmp_path / "job.out"
    output.write_text("line one\nslurmstepd: error: execve(): shipyard: No such file or directory\n")
    with running(server, engine):
        job = until(lambda: engine.jobs and engine.job_of(task))
        until(lambda: "pending in" in doc(server, task)["status_message"])
        engine.jobs[job].status = replace(engine.jobs[job].status, phase=Phase.FAILED, reason="NonZeroExitCode",
                                          exit_code=2, output=str(output))
        until(lambda: doc(server, task)["status"] == "failed")
    console = "\n".join(str(e["msg"]) for e in server.events if e["task"] == task)
    assert f"the last lines of {output}" in console and "execve(): shipyard: No such file" in console
    assert "exit code 2" in doc(server, task)["status_reason"]


@pytest.mark.parametrize("arguments, expected", [
    (None, ()),
    ("", ()),
    ("--shm-size 1g --env A=1", ("--shm-size", "1g", "--env", "A=1")),
    (["--workdir", "/w"], ("--workdir", "/w")),
])
def test_the_tasks_container_arguments_reach_the_job_request(arguments, expected):
    from agent.glue.request import container_args

    assert container_args({"container": {"arguments": arguments}}) == expected


def test_unsplittable_container_arguments_fail_the_task_naming_the_field():
    from agent.glue.engine import JobRejected
    from agent.glue.request import container_args

    with pytest.raises(JobRejected, match="container.arguments"):
        container_args({"container": {"arguments": "--env 'A=1"}})
