"""Who a task's `user` and `company` are, as `{id, name}` objects for the _ex answers.

One seam: `refs(conn, user_ids)` maps user ids to their names, by the rule server/services/users.py
states: a user is a key (its access key is the id, its label the name), and a run's task key is
named after the key that minted it.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server.auth.keys import TASK
from server.storage import tables as t


def refs(conn: Any, user_ids: set[str]) -> dict[str, dict]:
    """`{id: {id, name}}` for each user id; a key without a label is named by its id."""
    wanted = [u for u in user_ids if isinstance(u, str) and u]
    names: dict[str, str] = {}
    if wanted:
        names = _names(conn, wanted)
    return {u: {"id": u, "name": names.get(u) or u} for u in wanted}


def _names(conn: Any, wanted: list[str]) -> dict[str, str]:
    c = t.credentials.c
    rows = list(conn.execute(select(c.access_key, c.name, c.role, c.minted_by).where(c.access_key.in_(wanted))))
    minters = {row.minted_by for row in rows if row.role == TASK and row.minted_by}
    minted = {row[0]: row[1] for row in conn.execute(select(c.access_key, c.name).where(c.access_key.in_(minters)))}
    return {row.access_key: (minted.get(row.minted_by) if row.role == TASK else None) or row.name or row.access_key
            for row in rows}


def company_ref(company: Any) -> dict:
    """The single tenant's company as the _ex answers show it."""
    return {"id": company or "", "name": company or ""}
