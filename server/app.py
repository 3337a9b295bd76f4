"""Assemble and run the server: one process, three listeners (API, files, web).

The listeners share one event loop; handlers compute on `state.handlers` (server/offload.py),
slow clients are cut off by server/http_guard.py. SIGTERM: the listeners stop accepting, give
requests `shutdown_grace_s` to finish, cancel the rest, and the store closes; a watchdog exits
the process if that has not happened a few seconds later (a handler stuck in a query).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from server.auth.keys import ANONYMOUS, KeyStore, TokenSigner, load_token_secret
from server.auth.login_guard import LoginGuard
from server.config import ServerConfig, parse_quotas
from server.errors import APIError
from server.fairshare import preempt
from server.fairshare.policy import Quota
from server.fairshare.usage import FairSettings, QuotaBook
from server.files.backend import FileBackend
from server.files.local import LocalBackend
from server.files.store import build_files_app
from server.metrics import with_metrics
from server.notify import Notifier
from server.replicas import Coordinator
from server.rpc.api import build_api_app
from server.rpc.guard import guarded_protocol
from server.rpc.offload import HandlerPool, PoolClosed
from server.rpc.registry import CallContext
from server.services import leases, load_all
from server.services.queues import entries
from server.services.queues import metrics as queue_metrics
from server.services.queues.crud import ensure_default_queue
from server.state import _KEY_SWEEP_S, ServerState
from server.storage.store import PoolSettings, Store, WriteConflict, retrying
from server.web.official_ui import check_build
from server.web.pages import build_web_app
from shipyard.errors import ConfigError
from shipyard.signals import Shutdown

# PostgreSQL: the queues long-polls take as empty are checked together this often (_check_empty_queues)
_EMPTY_CHECK_S = 60.0

log = logging.getLogger("shipyard.server")


@dataclass
class SeededKey:
    access_key: str
    secret_key: str
    generated: bool


def create_state(config: ServerConfig) -> ServerState:
    load_all()
    data_dir = config.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    (data_dir / "files").mkdir(exist_ok=True)
    store = Store(config.db_url, synchronous=config.sqlite_synchronous, upgrade=config.upgrade_at_start,
                  pool=PoolSettings(config.db_pool_size, config.db_max_overflow, config.db_pool_timeout_s,
                                    config.db_statement_timeout_s))
    secrets = config.token_secrets or [load_token_secret(store)]
    state = ServerState(store=store, data_dir=data_dir,
                        signer=TokenSigner(secrets[0], config.token_ttl_s, previous=secrets[1:]),
                        keys=KeyStore(store), files_url=config.url(config.files_port),
                        web_url=config.url(config.web_port), api_url=config.url(config.api_port),
                        long_poll_max_s=config.long_poll_max_s, worker_timeout_s=config.worker_timeout_s,
                        lease_max_attempts=config.lease_max_attempts, reaper_interval_s=config.reaper_interval_s,
                        login_guard=LoginGuard(config.login_failures_per_key, config.login_failures_per_address,
                                               config.login_window_s),
                        files_max_file_mb=config.files_max_file_mb,
                        files_max_request_mb=config.files_max_request_mb,
                        files_min_free_mb=config.files_min_free_mb, files_backend=open_files_backend(config),
                        handlers=HandlerPool(config.handler_threads, ingest_threads=config.ingest_threads),
                        query_budget_s=config.query_budget_s,
                        web_ui=check_build(Path(config.web_ui)) if config.web_ui else None,
                        cors_origins=config.cors_origin_set, fair=QuotaBook(fair_settings(config)),
                        replica=config.replica,
                        notifier=Notifier(listening_recheck_s=config.notify_recheck_s))
    if not store.is_sqlite:
        state.coordinator = Coordinator(config.db_url, state.notifier, name=config.replica,
                                        leader_check_s=config.leader_check_s, on_key=state.forget_key,
                                        on_reconnect=state.forget_all_keys)
    ensure_default_queue(store, ANONYMOUS)
    return state


def open_files_backend(config: ServerConfig) -> FileBackend:
    """The configured files store, checked once at start: a missing bucket or refused credentials
    stop the server with the reason; an unreachable one is a warning (uploads answer 503 until it
    is back)."""
    backend: FileBackend
    if config.files_backend == "s3":
        from server.files.s3 import S3Backend, S3Settings  # boto3 is imported only when it is used

        backend = S3Backend(S3Settings.of(config))
    else:
        backend = LocalBackend(config.data_dir / "files", config.files_min_free_mb)
    try:
        backend.check()
    except APIError as exc:
        if exc.code != 503:
            raise ConfigError(f"files store {backend.describe()}: {exc.msg}") from None
        log.warning("files store %s is not reachable yet: %s", backend.describe(), exc.msg)
    log.info("files store: %s", backend.describe())
    return backend


def seed_credentials(state: ServerState, config: ServerConfig) -> SeededKey | None:
    """Use the configured admin key, or generate one on the very first start. A configured key
    that was revoked (or expired) stays dead: starting with it is refused. One that is active
    with another secret gets the configured secret (rotation; its role is kept)."""
    if config.access_key and config.secret_key:
        outcome = state.keys.seed(config.access_key, config.secret_key, name="admin (configured)")
        if outcome in ("revoked", "expired"):
            raise ConfigError(
                f"the configured access key {config.access_key} is {outcome}, and a dead key is never brought "
                f"back. Mint a new one with `shipyard keys create --data-dir {config.data_dir} --name admin` "
                "and configure that pair (SHIPYARD_ACCESS_KEY / SHIPYARD_SECRET_KEY or --secret-key-file)")
        if outcome == "rotated":
            log.warning("access key %s: its secret was replaced by the configured one", config.access_key)
        return SeededKey(config.access_key, config.secret_key, generated=False)
    if state.keys.count() == 0:
        access, secret = state.keys.create(name="admin (generated at first start)")
        return SeededKey(access, secret, generated=True)
    return None


class _Listener(uvicorn.Server):
    """uvicorn without its own signal handling: Shipyard's signals module owns that."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listeners(state: ServerState, config: ServerConfig) -> list[_Listener]:
    apps = ((with_metrics(build_api_app(state), state), config.api_port), (build_files_app(state), config.files_port),
            (build_web_app(state), config.web_port))
    protocol = guarded_protocol(config.header_timeout_s, config.body_timeout_s)
    return [_Listener(uvicorn.Config(app, host=config.host, port=port, log_level="warning",
                                     lifespan="off", access_log=False, timeout_keep_alive=75,
                                     server_header=False, http=protocol,
                                     timeout_graceful_shutdown=config.shutdown_grace_s))  # type: ignore[arg-type]
            for app, port in apps]


def _stop_listeners(servers: list[_Listener], count: int, state: ServerState) -> None:
    """First signal: drain (uvicorn's graceful shutdown; long-polls answer "nothing" at once).
    Second: stop waiting for requests."""
    state.notifier.close()
    for server in servers:
        server.should_exit = True
        if count >= 2:
            server.force_exit = True


def _exit_watchdog(shutdown: Shutdown, done: threading.Event, after_s: float) -> None:
    """Exit the process `after_s` after a shutdown signal unless `serve` has returned by then."""
    def watch() -> None:
        shutdown.event.wait()
        if not done.wait(after_s):
            log.error("shutdown did not finish within %.0f s (a request is stuck); exiting now", after_s)
            logging.shutdown()
            os._exit(1)

    threading.Thread(target=watch, name="shipyard-exit-watchdog", daemon=True).start()


def _raise_open_files_limit(wanted: int = 65536) -> None:
    """Many client connections need many file descriptors: raise the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _close_store(state: ServerState, grace_s: float) -> bool:
    """Close the database once no handler is running: False when one is still running after
    `grace_s` (it keeps its connection; what was committed is in SQLite's write-ahead log)."""
    state.store.stop_grouping()  # first: pool threads may be waiting on the gate an open group holds
    if state.handlers is not None and not state.handlers.close(grace_s):
        log.warning("%d request(s) still running at shutdown; exiting without waiting for them",
                    state.handlers.busy)
        return False
    state.keys.close()
    state.store.close()
    return True


async def serve(state: ServerState, config: ServerConfig, shutdown: Shutdown | None = None,
                ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    state.notifier.bind(loop)
    state.store.group_commits(loop)
    queue_metrics.sample_later(state.store)  # queue metrics by a pass, not in each enqueue and pop
    _raise_open_files_limit()
    # Pool threads computing in Python hold the GIL up to a switch interval at a time, and the
    # loop may wait several of them per request: 1 ms instead of 5 keeps /debug.ping prompt.
    sys.setswitchinterval(0.001)
    servers = _listeners(state, config)
    _freeze_startup_objects()
    done = threading.Event()
    if shutdown is not None:
        shutdown.on_signal(lambda count: _stop_listeners(servers, count, state))
        _exit_watchdog(shutdown, done, config.shutdown_grace_s + 3.0)
    try:
        await _serve_listeners(state, config, servers, ready)
    finally:
        state.store.stop_grouping()
        done.set()


def _freeze_startup_objects() -> None:
    """Take what the server made before serving (modules, tables, compiled statements: ~80,000
    objects that live as long as it does) out of the cyclic collector's sight. A full collection
    stops every thread, the event loop's included; walking them took 0.2-0.5 s at load, the last
    stalls in the read tail. Collections then walk only what requests made since."""
    gc.collect()
    gc.freeze()


async def _serve_listeners(state: ServerState, config: ServerConfig, servers: list[_Listener],
                           ready: asyncio.Event | None) -> None:
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.02)
    failed = [t for t in tasks if t.done()]
    if failed:
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        raise SystemExit(f"could not start listeners on {config.host} ports "
                         f"{config.api_port}/{config.files_port}/{config.web_port} (in use?)")
    if ready is not None:
        ready.set()
    if state.coordinator is not None:
        state.coordinator.start()
    periodic = [asyncio.create_task(job(state)) for job in _periodic_jobs(state)]
    await asyncio.gather(*tasks)
    for job in periodic:
        job.cancel()
    _last_samples(state)
    if state.coordinator is not None:
        state.coordinator.stop()
    if not _close_store(state, grace_s=1.0):
        # A pool thread is still inside a handler. Interpreter shutdown would wait on it or kill it
        # mid-call (a C extension then aborts the process); what was committed is on disk already.
        logging.shutdown()
        os._exit(0)


def _periodic_jobs(state: ServerState) -> list:
    """What runs beside the requests while the server serves (each loops until cancelled)."""
    jobs = [_reap_leases, _preempt, _sample_queues]
    if state.coordinator is not None:  # PostgreSQL: what listening makes possible
        jobs += [_sweep_keys, _check_empty_queues]
    return jobs


def fair_settings(config: ServerConfig) -> FairSettings:
    quotas = {entity: Quota(gpus, borrow) for entity, (gpus, borrow) in parse_quotas(config.quotas).items()}
    return FairSettings(quotas=quotas, half_life_s=config.fair_share_half_life_h * 3600.0,
                        default_share=config.fair_default_share, preemption=config.preemption == "on",
                        interval_s=config.preempt_interval_s, gpu_capacity=config.gpu_capacity)


async def _preempt(state: ServerState) -> None:
    """Guarantees kept waiting by borrowers → preemption requests (server/fairshare/preempt.py)."""
    ctx = CallContext(store=state.store, identity=ANONYMOUS, endpoint="preempter", version="2.31",
                      notifier=state.notifier, settings=state)
    while True:
        await asyncio.sleep(max(0.2, state.fair.settings.interval_s))
        try:
            for task_id, claimant in await state.run_db(preempt.run_pass, ctx):
                log.info("asked the agent of task %s to preempt it for task %s", task_id, claimant)
        except SQLAlchemyError:
            log.exception("preemption pass failed; retrying")


async def _sample_queues(state: ServerState) -> None:
    """The queues whose entries changed → their length and wait samples, every SAMPLE_EVERY_S
    (server/services/queues/metrics.py), on every replica (each samples its own changes)."""
    while True:
        await asyncio.sleep(queue_metrics.SAMPLE_EVERY_S)
        try:
            await state.run_db(retrying, queue_metrics.run_pass, state.store)
        except (SQLAlchemyError, WriteConflict) as exc:
            log.warning("queue metrics pass failed (%s); retrying", str(exc).splitlines()[0])
        except PoolClosed:
            return  # shutting down: the last samples are taken after the listeners stop


async def _sweep_keys(state: ServerState) -> None:
    """PostgreSQL: the keys in use looked up again together, every _KEY_SWEEP_S (server/state.py)."""
    await _every(state, _KEY_SWEEP_S, "key sweep failed (%s); each key is looked up on its own meanwhile",
                 state.sweep_keys)


async def _check_empty_queues(state: ServerState) -> None:
    """PostgreSQL: the queues long-polls take as empty (server/notify.py) checked together, one
    statement every _EMPTY_CHECK_S: entries written other than through the API (by hand, in SQL)
    are found within that, and a queue gone makes its long-polls answer so."""
    await _every(state, _EMPTY_CHECK_S, "empty-queue check failed (%s); retrying", check_empty_queues, state)


async def _every(state: ServerState, seconds: float, failed: str, fn: Callable[..., object], *args: object) -> None:
    """`fn(*args)` on the handler pool every `seconds` until the pool closes; a database error is
    logged (`failed` % its first line) and the next round tries again."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await state.run_db(fn, *args)
        except SQLAlchemyError as exc:
            log.warning(failed, str(exc).splitlines()[0])
        except PoolClosed:
            return


def check_empty_queues(state: ServerState) -> int:
    """One pass of _check_empty_queues (on the handler pool): how many queues it looked at."""
    known = state.notifier.empty_queues()
    if known:
        with state.store.tx() as conn:
            state.notifier.forget_empty(entries.not_empty_or_gone(conn, known))
    return len(known)


def _last_samples(state: ServerState) -> None:
    try:
        queue_metrics.stop_sampling_later(state.store)
    except SQLAlchemyError as exc:  # the database away at shutdown: those samples are lost, nothing else
        log.warning("last queue metrics samples not written (%s)", str(exc).splitlines()[0])


async def _reap_leases(state: ServerState) -> None:
    """Expired leases → re-queue or fail (server/services/leases.py), every reaper_interval_s."""
    ctx = CallContext(store=state.store, identity=ANONYMOUS, endpoint="reaper", version="2.31",
                      notifier=state.notifier, settings=state)
    while True:
        await asyncio.sleep(state.reaper_interval_s)
        if not state.is_leader:
            continue  # another replica reaps (server/replicas.py)
        try:
            for task_id, outcome in await state.run_db(leases.reap_expired, ctx):
                log.warning("lease of task %s expired: %s", task_id, outcome)
        except (SQLAlchemyError, WriteConflict) as exc:
            log.warning("lease reaper pass failed (%s); retrying", str(exc).splitlines()[0])
