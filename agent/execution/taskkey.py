"""A key of its own for every run, so a task never holds the agent's key.

    keys = TaskKeys(api, agent_key=(access, secret), ttl_s=86400)
    key = keys.mint(task_id)    # auth.create_credentials {role: task, label: task id}
    ...                         # key.access_key / key.secret_key go into the task's environment
    keys.extend(key)            # from the run's watch loop, every `renew_every_s`
    keys.revoke(key)            # when the run ends, whatever the outcome
    key = keys.start_run(task_id, attempt, message)   # the glue: its claim marked started and the key
                                # minted in one call (`tasks.start_run`); None: make the two calls
    got = keys.start_runs([(task_id, attempt), ...], message)   # several claims in one call:
                                # {task id: TaskKey or the ServerError that refused it}; None: one at a time

A `task` key reports, uploads, reads, clones and enqueues, but creates, extends and revokes no
key but itself. It expires on its own `ttl_s` after the last extension if the agent dies.

A server that does not advertise Shipyard's per-task keys (`task_keys` in server.info's
extensions: a reference ClearML server), or that refuses the mint (the agent's key is a `user`
key), gets the agent's own key passed to its tasks, as clearml-agent does; the agent says so
once in its log.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from agent.taskserver.port import TaskServer
from shipyard.errors import AuthError, ServerError, ServerUnreachable
from shipyard.protocol import START_RUN, START_RUNS

log = logging.getLogger("shipyard.agent.taskkey")

DEFAULT_TTL_S = 24 * 3600.0
_REFUSALS = frozenset({400, 403, 404})   # what a server without our semantics answers


@dataclass(frozen=True)
class TaskKey:
    access_key: str
    secret_key: str
    minted: bool
    """False: the agent's own key, passed on because the server could not mint one."""


NO_KEY = TaskKey("", "", minted=False)   # for work that starts no task process (`shipyard build`)


class TaskKeys:
    """Mints, extends and revokes the per-run keys of one agent (safe to share between runs)."""

    def __init__(self, api: TaskServer, agent_key: tuple[str, str], *, ttl_s: float = DEFAULT_TTL_S):
        self.api = api
        self.agent_key = agent_key
        self.ttl_s = ttl_s
        self._supported: bool | None = None   # None: not asked yet
        self._starts: bool | None = None      # the server offers START_RUN (asked with _supported)
        self._starts_many = False             # ... and its `runs` (START_RUNS), several claims per call
        self._lock = threading.Lock()

    @property
    def renew_every_s(self) -> float:
        return max(self.ttl_s / 4, 1.0)

    def mint(self, task_id: str) -> TaskKey:
        """A fresh `task` key for this run, or the agent's key where the server can't mint one.
        Raises ServerUnreachable / AuthError / other ServerErrors: the run cannot start safely."""
        if not self._server_mints():
            return self._fallback(None)
        try:
            data = self.api.call("auth.create_credentials", {"role": "task", "label": task_id,
                                                             "expires_in_s": self.ttl_s})
        except ServerError as exc:
            if isinstance(exc, AuthError) or exc.code not in _REFUSALS:
                raise
            return self._fallback(f"auth.create_credentials was refused ({exc})")
        return TaskKey(str(data["access_key"]), str(data["secret_key"]), minted=True)

    def start_run(self, task_id: str, attempt: int | None, message: str) -> TaskKey | None:
        """Mark a leased claim started (`message`, fenced by `attempt`) and mint its run's key, in one
        call; None where the server does not offer that (a reference server, an older Shipyard) or
        this key may not mint: the caller then makes `tasks.started` and `mint` itself. Raises as
        `tasks.started` does (a superseded claim: STALE_CLAIM)."""
        if attempt is None or not self._server_mints() or not self._starts:
            return None
        try:
            data = self.api.call(START_RUN, {"task": task_id, "attempt": attempt, "status_message": message,
                                             "force": True, "expires_in_s": self.ttl_s})
        except ServerError as exc:
            if isinstance(exc, AuthError) or exc.code not in (403, 404):
                raise
            with self._lock:
                self._starts = False   # refused to this key (or gone): the two calls from now on
            return None
        return TaskKey(str(data["access_key"]), str(data["secret_key"]), minted=True)

    def start_runs(self, claims: list[tuple[str, int]], message: str) -> dict[str, TaskKey | ServerError] | None:
        """`start_run` for several leased claims in one call and one transaction: each claim's key,
        or the ServerError that refused that claim alone (a superseded one: STALE_CLAIM); None where
        the server does not offer it (the caller starts each claim itself). Raises as `start_run`."""
        if not claims or not self._server_mints() or not self._starts_many:
            return None
        data = self.api.call(START_RUN, {START_RUNS: [{"task": task, "attempt": attempt} for task, attempt in claims],
                                         "status_message": message, "force": True, "expires_in_s": self.ttl_s})
        got: dict[str, TaskKey | ServerError] = {}
        for answer in data.get(START_RUNS) or []:
            error = answer.get("error")
            got[answer["task"]] = (TaskKey(str(answer["access_key"]), str(answer["secret_key"]), minted=True)
                                   if error is None else
                                   ServerError(f"{START_RUN} refused task {answer['task']}: {error.get('msg')}",
                                               code=int(error.get("code") or 500), subcode=int(error.get("subcode") or 0),
                                               endpoint=START_RUN))
        return got

    def extend(self, key: TaskKey) -> None:
        """Push the key's expiry `ttl_s` ahead; a failure is logged (the key still lives a while)."""
        if not key.minted:
            return
        try:
            self.api.call("auth.extend_credentials", {"access_key": key.access_key, "expires_in_s": self.ttl_s},
                          deadline_s=10)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("could not extend the task key %s: %s", key.access_key, exc)

    def revoke(self, key: TaskKey) -> None:
        """End the key now; a failure is logged (the key then expires on its own)."""
        if not key.minted:
            return
        try:
            self.api.call("auth.revoke_credentials", {"access_key": key.access_key}, deadline_s=30)
        except (ServerError, ServerUnreachable) as exc:
            log.warning("could not revoke the task key %s (it expires within %gs): %s",
                        key.access_key, self.ttl_s, exc)

    def _server_mints(self) -> bool:
        with self._lock:
            if self._supported is None:
                extensions = (self.api.server_info().get("shipyard") or {}).get("extensions") or {}
                self._supported = "task_keys" in extensions
                self._starts = (extensions.get("task_keys") or {}).get("start") == START_RUN
                self._starts_many = bool(self._starts and (extensions.get("task_keys") or {}).get("start_many"))
                if not self._supported:
                    self._warn("the server does not offer per-task keys (not a Shipyard server)")
            return self._supported

    def _fallback(self, why: str | None) -> TaskKey:
        if why is not None:
            with self._lock:
                if self._supported:
                    self._supported = False
                    self._warn(why)
        return TaskKey(*self.agent_key, minted=False)

    @staticmethod
    def _warn(why: str) -> None:
        log.warning("%s: tasks get this agent's own API key, as clearml-agent does. On a Shipyard server, give "
                    "the agent a key of role 'agent' (`shipyard keys create --role agent`) so that every run "
                    "gets a short-lived key of its own.", why)
