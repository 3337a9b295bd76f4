"""Who a task's `user` and `company` are, as `{id, name}` objects for the _ex answers.

One seam: `refs(conn, user_ids)` maps user ids to their names. A user is a key here (its access
key is the id, its label the name); the users service will own this mapping once it exists, and
only this module changes then.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from server.storage import tables as t


def refs(conn: Any, user_ids: set[str]) -> dict[str, dict]:
    """`{id: {id, name}}` for each user id; a key without a label is named by its id."""
    wanted = [u for u in user_ids if isinstance(u, str) and u]
    names: dict[str, str] = {}
    if wanted:
        c = t.credentials.c
        names = {row[0]: row[1] for row in conn.execute(select(c.access_key, c.name).where(c.access_key.in_(wanted)))}
    return {u: {"id": u, "name": names.get(u) or u} for u in wanted}


def company_ref(company: Any) -> dict:
    """The single tenant's company as the _ex answers show it."""
    return {"id": company or "", "name": company or ""}
