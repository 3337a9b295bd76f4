"""users.*: a key is a user (a single-tenant server has no user accounts of its own).

Every access key is a user: its id is the access key (what tasks, models, projects and queues
store in `user`), its name the key's label (`shipyard keys create --name`), or the access key
when it has none. A run's `task` key is shown as the key that minted it (the agent's), with
its own id, so what a run creates stays attributed to something a person recognises.

Preferences (the official web UI keeps its table columns and layout there) are stored per
user in the server's meta table, one JSON document per key, and `users.set_preferences` merges
dotted keys into it (`{"a.b": 0}` sets `b` inside `a`), as the reference schema says.

For the get_all_ex answers that show `user` as an object: `user_names(store)` reads every name
once, `user_ref(user_id, names)` makes the `{id, name}` object.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select

from server import errors, query
from server.auth.keys import COMPANY, SERVER_VERSION, TASK
from server.rpc.registry import CallContext, Request, endpoint
from server.storage import tables as t
from server.storage.store import Store
from shipyard import clock

MAX_PREFERENCES_BYTES = 1024 * 1024
GETTING_STARTED = {"install": "pip install clearml", "configure": "clearml-init",
                   "agentName": "shipyard daemon"}


def _key_rows(store: Store) -> list[Any]:
    c = t.credentials.c
    with store.tx() as conn:
        return list(conn.execute(select(c.access_key, c.name, c.role, c.created, c.revoked,
                                        c.minted_by, c.instance)).all())


def user_names(store: Store) -> dict[str, str]:
    """Every user id (access key) -> its display name, read in one query."""
    rows = _key_rows(store)
    own = {row.access_key: (row.name or row.access_key) for row in rows}
    return {row.access_key: own.get(row.minted_by or "", own[row.access_key]) if row.role == TASK
            else own[row.access_key] for row in rows}


def user_ref(user_id: str | None, names: dict[str, str]) -> dict[str, str]:
    """The `{id, name}` object the web UI reads for a stored `user` id."""
    user_id = user_id or ""
    return {"id": user_id, "name": names.get(user_id, user_id)}


def _user_doc(row: Any, names: dict[str, str]) -> dict:
    name = names.get(row.access_key, row.access_key)
    given, _, family = name.partition(" ")
    return {"id": row.access_key, "name": name, "given_name": given, "family_name": family or given,
            "avatar": "", "company": COMPANY, "role": row.role, "created": clock.iso(row.created),
            "email": "", "providers": {}}


def _users(ctx: CallContext, req: Request, projects: list[str] | None = None) -> list[dict]:
    rows = [row for row in _key_rows(ctx.store) if row.role != TASK]
    names = user_names(ctx.store)
    docs = [_user_doc(row, names) for row in rows]
    wanted = req.str_list("id")
    if wanted:
        docs = [d for d in docs if d["id"] in wanted]
    if projects is not None:
        active = _active_in(ctx.store, projects)
        docs = [d for d in docs if d["id"] in active]
    body = {k: v for k, v in req.body.items() if k in ("name", "only_fields", "order_by", "page", "page_size")}
    return query.apply(docs, {**body, "search_hidden": True})


def _active_in(store: Store, projects: list[str]) -> set[str]:
    """Users who created tasks in these projects."""
    with store.tx() as conn:
        docs = store.get_many(conn, t.tasks, [t.tasks.c.project.in_(projects)])
    return {d.get("user") or "" for d in docs}


@endpoint("users.get_all")
def get_all(ctx: CallContext, req: Request) -> dict:
    return {"users": _users(ctx, req)}


@endpoint("users.get_all_ex")
def get_all_ex(ctx: CallContext, req: Request) -> dict:
    projects = req.str_list("active_in_projects")
    return {"users": _users(ctx, req, projects or None)}


@endpoint("users.get_by_id")
def get_by_id(ctx: CallContext, req: Request) -> dict:
    user_id = req.id("user", "user")
    names = user_names(ctx.store)
    for row in _key_rows(ctx.store):
        if row.access_key == user_id:
            return {"user": _user_doc(row, names)}
    raise errors.APIError(400, 400, f"Invalid user id: {user_id}", {"id": user_id})


@endpoint("users.get_current_user")
def get_current_user(ctx: CallContext, req: Request) -> dict:
    ident = ctx.identity
    names = user_names(ctx.store)
    row = next((r for r in _key_rows(ctx.store) if r.access_key == ident.user), None)
    name = names.get(ident.user) or ident.user_name or ident.user
    given, _, family = name.partition(" ")
    user = {"id": ident.user, "name": name, "given_name": given, "family_name": family or given,
            "role": ident.role, "avatar": "", "company": {"id": ident.company, "name": ident.company},
            "preferences": load_preferences(ctx.store, ident.user),
            "created": clock.iso(row.created) if row is not None else None,
            "created_in_version": SERVER_VERSION}
    return {"user": user, "getting_started": dict(GETTING_STARTED),
            "settings": {"max_download_items": "1000"}}


def _preferences_key(user_id: str) -> str:
    return "prefs:" + hashlib.sha1(user_id.encode()).hexdigest()  # server_meta keys are at most 64 long


def load_preferences(store: Store, user_id: str) -> dict:
    with store.tx() as conn:
        raw = store.meta_get(conn, _preferences_key(user_id))
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def merge_dotted(target: dict, updates: dict) -> dict:
    """`{"a.b": 0}` sets `b` inside `a` (made an object where it was not one); plain keys replace."""
    for key, value in updates.items():
        node = target
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return target


@endpoint("users.get_preferences")
def get_preferences(ctx: CallContext, req: Request) -> dict:
    return {"preferences": load_preferences(ctx.store, ctx.identity.user)}


@endpoint("users.set_preferences")
def set_preferences(ctx: CallContext, req: Request) -> dict:
    updates = req.mapping("preferences", required=True)
    if any(not key or any(not part for part in key.split(".")) for key in updates):
        raise errors.validation("field 'preferences' has an empty key (or an empty part in a dotted key)")
    key = _preferences_key(ctx.identity.user)
    with ctx.store.tx() as conn:
        raw = ctx.store.meta_get(conn, key)
        current = json.loads(raw) if raw else {}
        merged = merge_dotted(current if isinstance(current, dict) else {}, updates)
        text = json.dumps(merged, separators=(",", ":"))
        if len(text) > MAX_PREFERENCES_BYTES:
            raise errors.validation(f"field 'preferences': the stored preferences would exceed "
                                    f"{MAX_PREFERENCES_BYTES} bytes")
        ctx.store.meta_set(conn, key, text)
    return {"updated": 1, "fields": {"preferences": updates}}
