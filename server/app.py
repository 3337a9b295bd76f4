"""Assemble and run the server: one process, three listeners (API, files, web)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Iterator

import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from server.api import build_api_app
from server.auth import ANONYMOUS, KeyStore, TokenSigner, load_token_secret
from server.config import ServerConfig
from server.files import build_files_app
from server.login_guard import LoginGuard
from server.metrics import with_metrics
from server.registry import CallContext
from server.services import leases, load_all
from server.services.queues import ensure_default_queue
from server.state import ServerState
from server.storage.store import Store
from server.web import build_web_app
from shipyard.errors import ConfigError
from shipyard.signals import Shutdown

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
    store = Store(config.db_url, synchronous=config.sqlite_synchronous)
    state = ServerState(store=store, data_dir=data_dir,
                        signer=TokenSigner(load_token_secret(store), config.token_ttl_s),
                        keys=KeyStore(store), files_url=config.url(config.files_port),
                        web_url=config.url(config.web_port), api_url=config.url(config.api_port),
                        long_poll_max_s=config.long_poll_max_s, worker_timeout_s=config.worker_timeout_s,
                        lease_max_attempts=config.lease_max_attempts, reaper_interval_s=config.reaper_interval_s,
                        login_guard=LoginGuard(config.login_failures_per_key, config.login_failures_per_address,
                                               config.login_window_s),
                        files_max_file_mb=config.files_max_file_mb,
                        files_max_request_mb=config.files_max_request_mb,
                        files_min_free_mb=config.files_min_free_mb)
    ensure_default_queue(store, ANONYMOUS)
    return state


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
    return [_Listener(uvicorn.Config(app, host=config.host, port=port, log_level="warning",
                                     lifespan="off", access_log=False, timeout_keep_alive=75,
                                     server_header=False))
            for app, port in apps]


async def serve(state: ServerState, config: ServerConfig, shutdown: Shutdown | None = None,
                ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    state.notifier.bind(loop)
    servers = _listeners(state, config)
    if shutdown is not None:
        shutdown.on_signal(lambda _count: [setattr(s, "should_exit", True) for s in servers])
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
    reaper = asyncio.create_task(_reap_leases(state))
    await asyncio.gather(*tasks)
    reaper.cancel()
    state.store.close()


async def _reap_leases(state: ServerState) -> None:
    """Expired leases → re-queue or fail (server/services/leases.py), every reaper_interval_s."""
    ctx = CallContext(store=state.store, identity=ANONYMOUS, endpoint="reaper", version="2.31",
                      notifier=state.notifier, settings=state)
    while True:
        await asyncio.sleep(state.reaper_interval_s)
        try:
            for task_id, outcome in leases.reap_expired(ctx):
                log.warning("lease of task %s expired: %s", task_id, outcome)
        except SQLAlchemyError:
            log.exception("lease reaper pass failed; retrying")
