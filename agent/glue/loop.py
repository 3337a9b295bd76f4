"""`GlueLoop`: Shipyard's queues handed to a cluster engine (Slurm, Kubernetes).

    register → { loop: claim more tasks, up to max_jobs  |  thread: watch the engine's jobs } → unregister

Claim: the daemon's long-poll and leases (agent/daemon/poller.py), from `claim_threads` claimers
(each reserves room first, so together they never pass max_jobs), each call asking for up to
`claim_batch` tasks at once where the server offers it (`count`); each claim is built into a
`JobRequest` (agent/glue/request.py) and submitted from a small thread pool, with a key minted
for that task (agent/execution/taskkey.py; the job never sees the glue's key): marking the claim
started and minting its key is one `tasks.start_run` where the server offers it, two calls elsewhere.
Watch (`agent/glue/follow.py`): every `watch_s` the engine's `statuses()` are mapped back onto
the tasks - pending reason as the status message, leases renewed, aborts turned into
`engine.cancel(job, grace)`, and the job's end reported where the task could not report it.
Restart-safe: nothing lives only here. Jobs are found again by name (`shipyard-<task id>`) with
their claim's attempt and key in the job's comment; a claim that never became a job is put back
by the server when its lease expires; a job whose claim was superseded is cancelled (fencing).
Engine unreachable: nothing new is claimed (tasks stay queued), the loop says why and retries.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from agent.daemon.poller import Claim, Queue, TaskSource, resolve_queues
from agent.daemon.reporter import StatusReporter
from agent.execution import lifecycle
from agent.execution.lifecycle import Outcome
from agent.execution.taskkey import TaskKey, TaskKeys
from agent.glue.engine import Engine, EngineUnavailable, JobRejected, JobRequest
from agent.glue.follow import Follower, Job
from agent.glue.request import GlueSettings, QueueSpec, build_request, with_key
from agent.taskserver.port import TaskServer
from shipyard.errors import ServerError, ServerUnreachable
from shipyard.protocol import OutcomeKind, TaskStatus

log = logging.getLogger("shipyard.agent.glue")


class GlueLoop:
    def __init__(self, api: TaskServer, engine: Engine, settings: GlueSettings, *, stop: threading.Event,
                 server_env: dict[str, str] | None = None, task_keys: TaskKeys | None = None,
                 echo: Callable[[str], None] | None = None, max_tasks: int | None = None):
        self.api = api
        self.engine = engine
        self.settings = settings
        self.stop = stop
        self.server_env = dict(server_env or {})   # CLEARML_API_HOST & co. for the node
        self.task_keys = task_keys or TaskKeys(api, ("", ""))
        self.echo = echo or (lambda _line: None)
        self.max_tasks = max_tasks                 # tests and benches: stop claiming after this many
        self.follower = Follower(api, engine, settings, self.task_keys, self._say)
        self.claimed = 0
        self._inflight = 0
        self._held: list[tuple[Claim, QueueSpec, str]] = []   # claims waiting for the engine to answer
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)   # notified when a submit finishes (room for a claim)
        self._specs: dict[str, QueueSpec] = {}
        self._reporter: StatusReporter | None = None
        self._turn = 0

    # -- the loop -------------------------------------------------------------------------------
    def work(self) -> int:
        queues = self._resolve()
        sources = [TaskSource(self.api, queues, long_poll_s=min(self.settings.watch_s, 30.0), stop=self.stop,
                              lease_s=self.settings.lease_s, worker=self.settings.worker, with_task=True)
                   for _ in range(max(1, self.settings.claim_threads))]
        source = sources[0]
        if not source.lease_s:
            self._say("the server offers no leases (not a Shipyard server): a glue needs them; stopping")
            return 1
        reporter = StatusReporter(self.api, self.settings.worker, [q.id for q in queues], interval_s=10.0)
        reporter.register()
        reporter.start()
        self._reporter = reporter
        pool = ThreadPoolExecutor(self.settings.submit_threads, thread_name_prefix="glue-submit")
        self._say(f"glue {self.settings.worker} handing {', '.join(q.name for q in queues)} to "
                  f"{self.engine.name} (up to {self.settings.max_jobs} job(s))")
        watcher = threading.Thread(target=self._watching, name="glue-watch", daemon=True)
        watcher.start()
        claimers = [threading.Thread(target=self._claiming, args=(extra, queues, pool), name=f"glue-claim-{n}",
                                     daemon=True) for n, extra in enumerate(sources[1:], 1)]
        for claimer in claimers:
            claimer.start()
        try:
            self._claiming(source, queues, pool)
        finally:
            self.stop.set()
            for claimer in claimers:
                claimer.join(60)
            for each in sources:
                each.close()
            pool.shutdown(wait=True)
            watcher.join(30)
            reporter.stop()
            reporter.unregister()
            self._say(f"glue {self.settings.worker} stopped after claiming {self.claimed} task(s)")
        return 0

    def _claiming(self, source: TaskSource, queues: list[Queue], pool: ThreadPoolExecutor) -> None:
        while not self._should_stop():
            self._claim(source, queues, pool)

    def _should_stop(self) -> bool:
        return self.stop.is_set() or (self.max_tasks is not None and self.claimed >= self.max_tasks
                                      and not self.follower.active and not self._inflight)

    def _resolve(self) -> list[Queue]:
        queues = resolve_queues(self.api, [q.name for q in self.settings.queues])
        self._specs = {q.id: spec for q, spec in zip(queues, self.settings.queues, strict=True)}
        return queues

    # -- watch (its own thread: a slow engine or a thousand jobs never hold up claims) ----------
    def _watching(self) -> None:
        """Every `watch_s`, or twice as long as the last watch took (a thousand jobs cost the
        server a round of reads: the watch never takes more than a third of the time)."""
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self._watch()
            except Exception:  # noqa: BLE001 - the watch must outlive one bad answer
                log.exception("the watch of %s's jobs failed; retrying", self.engine.name)
            self.stop.wait(max(self.settings.watch_s, 2 * (time.monotonic() - started)))

    def _watch(self) -> None:
        if self.follower.watch():
            self._retry_held()
        self._report_next()

    def _report_next(self) -> None:
        """Name one running task per watch in the worker's status report, in turn: the server then
        knows a live worker holds each task, so `tasks.stop` asks for an abort instead of forcing it."""
        active = self.follower.active
        if self._reporter is None or not active:
            return
        self._turn = (self._turn + 1) % len(active)
        self._reporter.set_task(active[self._turn].task_id)

    # -- claim ----------------------------------------------------------------------------------
    def _room(self) -> int:
        with self._lock:
            return self._room_locked()

    def _room_locked(self) -> int:
        """Room under max_jobs (and max_tasks), and for no more claims waiting for a submit thread
        than the threads and one batch per claimer: a claim is never left waiting long enough for
        its lease to run out before its job exists."""
        used = len(self.follower.active) + self._inflight + len(self._held)
        waiting = self.settings.submit_threads + self.settings.claim_batch * max(1, self.settings.claim_threads)
        room = min(self.settings.max_jobs - used, waiting - self._inflight)
        if self.max_tasks is not None:
            room = min(room, self.max_tasks - self.claimed)
        return room

    def _claim(self, source: TaskSource, queues: list[Queue], pool: ThreadPoolExecutor) -> None:
        """Claim while there is room and tasks come at once; wait up to `watch_s` for the first.
        Each call asks for as many as there is room for (up to `claim_batch`; the server answers
        with what it has, from one up)."""
        if self.follower.down is not None:
            self.stop.wait(self.settings.watch_s)
            return
        if not self._wait_for_room():
            return
        deadline = time.monotonic() + self.settings.watch_s
        wait_s: float = self.settings.watch_s
        while time.monotonic() < deadline and not self.stop.is_set():
            wanted = self._reserve(min(self.settings.claim_batch, source.max_count))
            if not wanted:
                return
            try:
                claims = source.next_many(queues, wait_s, wanted)
            except (ServerUnreachable, ServerError) as exc:
                self._unreserve(wanted)
                self._say(f"could not reach the queue: {exc}; retrying")
                self.stop.wait(self.settings.retry_s)
                return
            self._unreserve(wanted - len(claims))
            if len(claims) > 1 and self.settings.start_together:
                pool.submit(self._submit_together, claims, pool)
            else:
                for claim in claims:
                    pool.submit(self._submit, claim, self._specs[claim.queue.id])
            if not claims:
                return
            wait_s = 0.0

    def _wait_for_room(self) -> bool:
        """Room now, or after the next submit finishes (claims held back by the cap on waiting
        claims go on at once) or, for room under max_jobs, within `watch_s`."""
        with self._lock:
            if self._room_locked() > 0:
                return True
            self._freed.wait(self.settings.watch_s)
            return self._room_locked() > 0

    def _reserve(self, most: int) -> int:
        """Room for up to `most` more claims, taken before asking (several claimers never overshoot
        max_jobs or max_tasks): counted as claimed and in flight until `_unreserve`."""
        with self._lock:
            room = max(0, min(most, self._room_locked()))
            self.claimed += room
            self._inflight += room
            return room

    def _unreserve(self, count: int) -> None:
        with self._lock:
            self.claimed -= count
            self._inflight -= count

    def _submit_together(self, claims: list[Claim], pool: ThreadPoolExecutor) -> None:
        """Several claims of one call: each built and checked, all started in one `tasks.start_run`
        where the server offers that (`runs`), then each submitted on its own thread. A claim that
        cannot be built, or a server without it, goes the one-at-a-time way (`_submit`)."""
        built: list[tuple[Claim, QueueSpec, JobRequest]] = []
        for claim in claims:
            spec = self._specs[claim.queue.id]
            try:
                built.append((claim, spec, self._build(claim, spec)))
            except (JobRejected, ServerError, ServerUnreachable):
                pool.submit(self._submit, claim, spec)   # it fails there again, and is handled there
        keys: dict[str, TaskKey | ServerError] | None = None
        try:
            keys = self.task_keys.start_runs([(c.task_id, c.attempt) for c, _s, _r in built if c.attempt is not None],
                                             self._message)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("could not start %d claim(s) together: %s; one at a time", len(built), exc)
        for claim, spec, request in built:
            pool.submit(self._submit, claim, spec, request, (keys or {}).get(claim.task_id))

    def _submit(self, claim: Claim, spec: QueueSpec, request: JobRequest | None = None,
                started: TaskKey | ServerError | None = None) -> None:
        try:
            self._hand_over(claim, spec, request, started)
        except JobRejected as exc:
            self._reject(claim, exc)
        except EngineUnavailable as exc:
            with self._lock:
                self._held.append((claim, spec, str(exc)))
            self.follower.note_down(str(exc))
        except (ServerError, ServerUnreachable) as exc:
            # The lease expires and the server puts the task back: nothing is lost.
            log.warning("task %s: could not hand it to %s: %s", claim.task_id, self.engine.name, exc)
        except Exception:  # noqa: BLE001 - one task's trouble must not stop the glue
            log.exception("task %s: the glue failed while submitting it", claim.task_id)
        finally:
            with self._lock:
                self._inflight -= 1
                self._freed.notify_all()

    def _build(self, claim: Claim, spec: QueueSpec) -> JobRequest:
        task = claim.task or self.api.call("tasks.get_by_id", {"task": claim.task_id})["task"]
        request = build_request(task, spec, claim.attempt, self.settings, self.server_env)
        self.engine.check(request)
        return request

    def _hand_over(self, claim: Claim, spec: QueueSpec, request: JobRequest | None = None,
                   started: TaskKey | ServerError | None = None) -> None:
        """Task -> request -> check -> key -> submit; the job is followed from then on. `request`
        and `started` (its key, or why it was refused) where the claim was started with others."""
        request = request or self._build(claim, spec)
        if isinstance(started, ServerError):
            raise started
        key = started or self._start(claim)
        try:
            job_id = self.engine.submit(with_key(request, key.access_key, key.secret_key))
        except BaseException:
            self.task_keys.revoke(key)
            raise
        self.follower.adopt(Job(job_id, claim.task_id, claim.attempt, key.access_key if key.minted else ""),
                            self._message)

    @property
    def _message(self) -> str:
        return f"submitting to {self.engine.name}"

    def _start(self, claim: Claim) -> TaskKey:
        """The task marked taken ("submitting to ...": before the engine has it, so that an abort
        in between is never undone) and its run's key minted: one call where the server offers
        `tasks.start_run`, else `tasks.started` and `auth.create_credentials`."""
        key = self.task_keys.start_run(claim.task_id, claim.attempt, self._message)
        if key is not None:
            return key
        lifecycle.mark_started(self.api, claim.task_id, self._message, claim.attempt)
        return self.task_keys.mint(claim.task_id)

    def _retry_held(self) -> None:
        with self._lock:
            held, self._held = self._held, []
            self._inflight += len(held)
        for claim, spec, _why in held:
            self._submit(claim, spec)

    def _reject(self, claim: Claim, exc: JobRejected) -> None:
        reason = f"{self.engine.name} will not run this task: {exc}"
        self._say(f"task {claim.task_id}: {reason}")
        outcome = Outcome(TaskStatus.FAILED, OutcomeKind.USER_ERROR, reason)
        self.follower.last_line(claim.task_id, claim.attempt, f"shipyard: task {claim.task_id} ended: "
                                                              f"{outcome.status_reason}")
        try:
            lifecycle.report_outcome(self.api, claim.task_id, outcome, self.settings.worker, claim.attempt)
        except (ServerError, ServerUnreachable) as report_exc:
            log.warning("task %s: could not report the rejection: %s", claim.task_id, report_exc)

    def _say(self, line: str) -> None:
        log.info("%s", line)
        self.echo(line)
