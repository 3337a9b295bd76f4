"""Task documents: their default shape, loading, and status changes with side effects; and the
parts read defensively (artifacts) or cleaned before they are stored (repository URLs)."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from server import errors
from server.fairshare import usage as fair
from server.rpc.registry import CallContext
from server.storage import tables as t
from shipyard import clock
from shipyard.protocol import TaskStatus, TaskType, can_transition

EMBEDDED = ("script", "execution", "output", "models")  # shallow-merged by tasks.edit
REPLACED = ("hyperparams", "configuration", "runtime", "container", "tags", "system_tags")


def new_task_doc(ctx: CallContext, task_id: str, fields: dict[str, Any]) -> dict:
    now = clock.iso()
    doc: dict[str, Any] = {
        "id": task_id, "name": "", "type": TaskType.TRAINING, "status": TaskStatus.CREATED,
        "status_reason": "", "status_message": "", "comment": "", "tags": [], "system_tags": [],
        "user": ctx.identity.user, "company": ctx.identity.company, "created": now,
        "last_update": now, "last_change": now, "status_changed": now, "last_changed_by": ctx.identity.user,
        "script": {}, "execution": {}, "hyperparams": {}, "configuration": {}, "runtime": {},
        "models": {"input": [], "output": []}, "output": {}, "container": {}, "last_metrics": {},
        "last_iteration": 0, "active_duration": 0,
    }
    doc.update({k: v for k, v in fields.items() if v is not None})
    return doc


def load(ctx: CallContext, conn, task_id: str) -> dict:
    doc = ctx.store.get(conn, t.tasks, task_id) if isinstance(task_id, str) else None
    if doc is None:
        raise errors.invalid_id("task", task_id)
    return doc


def touch(ctx: CallContext, doc: dict, *, change: bool = True) -> None:
    now = clock.iso()
    doc["last_update"] = now
    if change:
        doc["last_change"] = now
        doc["last_changed_by"] = ctx.identity.user


def require_editable(doc: dict, force: bool) -> None:
    if not force and doc.get("status") != TaskStatus.CREATED:
        raise errors.invalid_status(
            f"Task can only be edited in 'created' status unless force=true: task={doc['id']} "
            f"status={doc.get('status')}")


def edit(ctx: CallContext, task_id: str, force: bool, mutate, *, any_status: bool = False) -> Any:
    """Load a task, apply `mutate(doc)`, touch and save it; returns what `mutate` returned. Only
    drafts may be edited without force, except parts the reference server lets change anytime."""
    with ctx.store.tx() as conn:
        doc = load(ctx, conn, task_id)
        if not any_status:
            require_editable(doc, force)
        result = mutate(doc)
        touch(ctx, doc)
        ctx.store.save(conn, t.tasks, doc)
    return result


def change_status(ctx: CallContext, conn, doc: dict, new: str, *, force: bool = False,
                  reason: str | None = None, message: str | None = None,
                  extra: dict[str, Any] | None = None) -> dict:
    """Compare-and-set the status of `doc` (already loaded in `conn`); returns changed fields."""
    current = doc.get("status") or TaskStatus.CREATED
    if not can_transition(current, new, force=force):
        raise errors.invalid_status(f"Invalid task status: cannot change from {current} to {new} "
                                    f"(task={doc['id']})")
    if new != TaskStatus.IN_PROGRESS and doc.get("_lease"):
        close_attempt(doc, f"{new}: {reason}" if reason else new, ctx, conn)
    now = clock.iso()
    fields: dict[str, Any] = {"status": new, "status_changed": now,
                              "status_reason": reason or "", "status_message": message or ""}
    fields.update(extra or {})
    doc.update(fields)
    touch(ctx, doc)
    if not ctx.store.save(conn, t.tasks, doc, expect_status=current):
        raise errors.status_race(f"Task status changed concurrently: task={doc['id']} expected={current}")
    fields["last_update"] = doc["last_update"]
    return fields


def max_attempts(ctx: CallContext) -> int:
    """How many runs a task gets when its agents are lost (server setting lease_max_attempts)."""
    return int(getattr(ctx.settings, "lease_max_attempts", 3) or 3)


def grant_lease(doc: dict, worker: str, queue_id: str, lease_s: float, max_runs: int | None = None) -> dict:
    """A claim becomes a lease (server/services/leases.py): the next attempt, its holder and expiry.
    The attempt only grows (it fences writes of earlier holders); the run is counted from 1 since
    the last enqueue by a person (`start_runs`), and `max_runs` is how many it may get."""
    attempt = int(doc.get("_attempt") or 0) + 1
    run = runs_so_far(doc) + 1
    now = clock.now()
    doc["_attempt"], doc["_run"] = attempt, run
    doc["_lease"] = {"worker": worker, "queue": queue_id, "expires": now + lease_s, "lease_s": lease_s}
    history = list(doc.get("shipyard_attempts") or [])
    entry: dict[str, Any] = {"attempt": attempt, "run": run, "worker": worker, "claimed": clock.iso(now)}
    if max_runs:
        entry["max_runs"] = max_runs
    history.append(entry)
    doc["shipyard_attempts"] = history
    return {"attempt": attempt, "expires_in_s": lease_s}


def runs_so_far(doc: dict) -> int:
    """How many runs the task has had since a person last enqueued it (older documents: attempts)."""
    return int(doc.get("_run", doc.get("_attempt")) or 0)


def start_runs(doc: dict) -> None:
    """A person enqueues the task: its runs are counted afresh (the attempt fence keeps growing)."""
    doc["_run"] = 0


def close_attempt(doc: dict, end: str, ctx: CallContext | None = None, conn=None) -> None:
    """The task's lease (if any) ends: drop it and note how the attempt ended (and, given the
    transaction, add the claim's GPU-seconds to its user's and project's fair-share usage)."""
    if conn is not None and (doc.get("_lease") or {}).get("gpus") is not None:
        fair.claim_ended(conn, doc, fair.half_life(ctx))
    doc.pop("_lease", None)
    history = list(doc.get("shipyard_attempts") or [])
    if history and "ended" not in history[-1]:
        history[-1] = {**history[-1], "ended": clock.iso(), "end": end}
        doc["shipyard_attempts"] = history


def public_view(ctx: CallContext, doc: dict) -> dict:
    """The task as clients see it: internals removed; docker_cmd synthesized for old API versions."""
    out = {k: v for k, v in doc.items() if not k.startswith("_") and k != "enqueue_status"}
    if isinstance(out.get("execution"), dict) and out["execution"].get("artifacts") is None:
        # The reference server always lists artifacts; the SDK's Task.delete() reads
        # task.execution["artifacts"] unguarded.
        out["execution"] = {**out["execution"], "artifacts": []}
    if ctx.version_tuple < (2, 13):
        container = doc.get("container") or {}
        image = container.get("image")
        if image:
            execution = dict(out.get("execution") or {})
            execution["docker_cmd"] = " ".join(p for p in (image, container.get("arguments") or "") if p)
            out["execution"] = execution
    return out


def artifacts(execution: Any) -> list[dict]:
    """The artifacts of a task's `execution`, skipping what is not an artifact (documents written
    before fields were type-checked may hold anything there)."""
    items = execution.get("artifacts") if isinstance(execution, dict) else None
    return [a for a in items if isinstance(a, dict)] if isinstance(items, list) else []


_SCP_LIKE = re.compile(r"^(?P<user>[^@/:]+(?::[^@/]*)?)@(?P<rest>[^@]+)$")  # user[:secret]@host:path
CREDENTIALS_REMOVED = ("script.repository: credentials were removed from the repository URL (every key can "
                       "read a task); agents clone with their own git credentials (agent git settings)")


def strip_credentials(url: str) -> str:
    """`url` without secrets: http(s) and other URLs lose their user info; ssh keeps the user name
    (`git@host` is how ssh picks the account) but loses any password."""
    if "@" not in url:
        return url
    if "://" not in url:
        match = _SCP_LIKE.match(url)
        return f"{match['user'].split(':', 1)[0]}@{match['rest']}" if match else url
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return url
    if "@" not in parts.netloc or host is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    if parts.scheme.endswith("ssh") and parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


def scrub_repository(script: Any, warnings: list[str]) -> Any:
    """`script` with credentials stripped from its repository URL; a warning is added if any were."""
    if not isinstance(script, dict) or not isinstance(script.get("repository"), str):
        return script
    clean = strip_credentials(script["repository"])
    if clean == script["repository"]:
        return script
    warnings.append(CREDENTIALS_REMOVED)
    return {**script, "repository": clean}
