"""auth.create_credentials / revoke_credentials / extend_credentials: short-lived keys.

Two callers mint keys here:

* the autoscaler (an admin key) mints one `user` key per machine it starts (`label` names the
  instance), keeps pushing its expiry forward while the machine lives and revokes it when the
  machine is terminated;
* an agent (an `agent` or admin key) mints one `task` key per run (`role: task`, `label` = the
  task id), hands it to the task process instead of its own key, extends it while the run lives
  and revokes it when the run ends.

`tasks.start_run` (shipyard.protocol.START_RUN) is the agent's mint and its claim's `tasks.started`
in one call and one transaction: the rules of both apply (the caller may mint task keys; the
`attempt` must be the task's current, leased claim), so it mints for no task the caller does not hold.

Who may mint which role, and extend or revoke which key, is `server.auth.may_mint` and
`may_revoke`: a non-admin never mints an admin or agent key, a `user` or `task` key mints
nothing and revokes only itself. The minting key is recorded on the new key (`minted_by`).
Revocation through the API takes effect on the next request (the per-process "key active"
cache is dropped for it).
"""
from __future__ import annotations

from server import errors
from server.auth.keys import ADMIN, AGENT, ROLES, TASK, USER, may_mint, may_revoke
from server.rpc.registry import CallContext, Request, endpoint
from server.services import leases
from server.services.tasks import doc as taskdoc
from server.task_waits import WAITERS
from shipyard import clock
from shipyard.protocol import START_RUN, START_RUNS, TaskStatus

MAX_TTL_S = 30 * 24 * 3600.0
DEFAULT_TTL_S = 24 * 3600.0
MAX_RUNS = 100   # claims one tasks.start_run may start (`runs`)


def _forbidden(msg: str) -> errors.APIError:
    return errors.APIError(403, 0, msg)


def _ttl(req: Request) -> float:
    ttl = req.number("expires_in_s", DEFAULT_TTL_S)
    if not 0 < ttl <= MAX_TTL_S:
        raise errors.validation(f"expires_in_s must be > 0 and <= {MAX_TTL_S:g}, got {ttl:g}")
    return ttl


def _requested_role(ctx: CallContext, req: Request) -> str:
    """The `role` field, or the role this caller mints by default (an agent: task keys)."""
    role = req.text("role")
    if role is None:
        return TASK if ctx.identity.role == AGENT else USER
    if role not in ROLES:
        raise errors.validation(f"field 'role' must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def _check_revoke(ctx: CallContext, access: str) -> None:
    """Admins revoke any key (an unknown one is a no-op), others their own or the ones they minted."""
    if ctx.identity.role == ADMIN:
        return
    key = ctx.settings.keys.get(access)
    if key is None or not may_revoke(ctx.identity, key):
        raise _forbidden("Only an admin may revoke credentials other than the caller's own"
                         + (" or those it minted" if ctx.identity.role == AGENT else "")
                         + f" (caller role: {ctx.identity.role})")


def _check_mint(ctx: CallContext, role: str) -> None:
    if not may_mint(ctx.identity.role, role):
        raise _forbidden(f"A key of role '{ctx.identity.role}' may not create '{role}' credentials"
                         + (" (an agent mints only task keys)" if ctx.identity.role == AGENT else
                            " (only an admin or an agent creates credentials)"))


@endpoint("auth.create_credentials")
def create_credentials(ctx: CallContext, req: Request) -> dict:
    role = _requested_role(ctx, req)
    _check_mint(ctx, role)
    label = (req.text("label") or "").strip()
    expires = clock.now() + _ttl(req)
    access, secret = ctx.settings.keys.create(name=label or "short-lived", role=role, expires=expires,
                                              instance=label or None, minted_by=ctx.identity.user)
    return {"access_key": access, "secret_key": secret, "expires": clock.iso(expires), "label": label,
            "role": role}


@endpoint("auth.extend_credentials")
def extend_credentials(ctx: CallContext, req: Request) -> dict:
    access = req.text("access_key", required=True)
    if ctx.identity.role != ADMIN:  # never a key itself: a short-lived key must not outlive its minter's will
        key = ctx.settings.keys.get(access)
        if ctx.identity.role != AGENT or key is None or key.get("minted_by") != ctx.identity.user:
            raise _forbidden("Only an admin, or the agent that minted them, may extend credentials "
                             f"(caller role: {ctx.identity.role})")
    expires = clock.now() + _ttl(req)
    if not ctx.settings.keys.extend(access, expires):
        raise errors.APIError(400, 0, f"Cannot extend credentials {access}: unknown, revoked or not short-lived")
    ctx.settings.forget_key(access)
    return {"access_key": access, "expires": clock.iso(expires)}


@endpoint("auth.revoke_credentials")
def revoke_credentials(ctx: CallContext, req: Request) -> dict:
    access = req.text("access_key", required=True)
    _check_revoke(ctx, access)
    revoked = ctx.settings.keys.revoke(access)
    ctx.settings.forget_key(access)
    return {"revoked": 1 if revoked else 0}


@endpoint(START_RUN)
def start_run(ctx: CallContext, req: Request) -> dict:
    """`tasks.started` of a leased claim plus its run's `task` key (label: the task id), committed
    together; with `runs` (START_RUNS), several claims in one transaction, each refused alone."""
    _check_mint(ctx, TASK)
    expires = clock.now() + _ttl(req)
    how = (req.flag("force"), req.text("status_reason"), req.text("status_message"))
    if req.body.get(START_RUNS) is not None:
        return {START_RUNS: _start_runs(ctx, _runs(req), expires, how)}
    task_id, attempt = req.id("task", "task"), req.integer("attempt", required=True)
    with ctx.store.tx() as conn:
        answer = _start_one(ctx, conn, taskdoc.load(ctx, conn, task_id), attempt, expires, how)
    WAITERS.wake(task_id)   # after the commit, as tasks.started does
    answer.pop("task")
    return answer


def _runs(req: Request) -> list[tuple[str, int]]:
    runs = req.body.get(START_RUNS)
    if (not isinstance(runs, list) or not 0 < len(runs) <= MAX_RUNS
            or not all(isinstance(r, dict) and isinstance(r.get("task"), str) and type(r.get("attempt")) is int
                       for r in runs)):
        raise errors.validation(f"field '{START_RUNS}' must be a list of 1 to {MAX_RUNS} "
                                "objects with a task id ('task') and its claim's 'attempt'")
    return [(r["task"], r["attempt"]) for r in runs]


def _start_runs(ctx: CallContext, runs: list[tuple[str, int]], expires: float, how: tuple) -> list[dict]:
    answers = []
    with ctx.store.tx() as conn:
        for task_id, attempt in runs:
            try:
                doc = taskdoc.load(ctx, conn, task_id)
                answers.append(_start_one(ctx, conn, doc, attempt, expires, how))
            except errors.APIError as exc:   # checked before anything of this claim is written
                answers.append({"task": task_id, "error": {"code": exc.code, "subcode": exc.subcode, "msg": exc.msg}})
    for answer in answers:
        if "error" not in answer:
            WAITERS.wake(answer["task"])
    return answers


def _start_one(ctx: CallContext, conn, doc: dict, attempt: int, expires: float, how: tuple) -> dict:
    force, reason, message = how
    task_id = doc["id"]
    leases.check_held(doc, attempt)
    fields = taskdoc.change_status(ctx, conn, doc, TaskStatus.IN_PROGRESS, force=force, reason=reason,
                                   message=message, extra={} if doc.get("started") else {"started": clock.iso()})
    access, secret = ctx.settings.keys.create_in(conn, name=task_id, role=TASK, expires=expires,
                                                 instance=task_id, minted_by=ctx.identity.user)
    return {"task": task_id, "started": 1, "updated": 1, "fields": fields, "access_key": access,
            "secret_key": secret, "expires": clock.iso(expires), "label": task_id, "role": TASK}
