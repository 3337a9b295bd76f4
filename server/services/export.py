"""organization.prepare_download_for_get_all / download_for_get_all: a table as a CSV file.

The web UI prepares an export with the query of the table it shows (a tasks or models
get_all_ex body) and the columns to write (`field_mappings`: a document path, its header and an
optional value -> text map), then opens the download in a new window (a GET with `prepare_id`).

    prepare   checks the request and runs the query once for one row (a bad query fails here,
              not in the download), then keeps the request for PREPARED_TTL_S under a random id,
              for the key that prepared it alone
    download  runs the query page by page (at most MAX_ROWS rows, as users.get_current_user's
              `max_download_items` says) and answers a CSV attachment. A cell that a
              spreadsheet would read as a formula (=, +, -, @ at its start) is prefixed with '

Both are ordinary (sync) handlers, so the query and the CSV writing run on the handler pool
(server/rpc/offload.py), never on the event loop.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from typing import Any

from sqlalchemy import delete, select
from starlette.responses import Response

from server import errors, query
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.models import crud as models
from server.services.tasks import ex
from server.storage import tables as t
from server.storage.store import new_id
from shipyard import clock

PREPARED_TTL_S = 300
MAX_ROWS = 1000
PAGE = 500
_LISTERS = {"task": ("tasks.get_all_ex", ex.get_all_ex, "tasks"), "model": ("models.get_all_ex", models.get_all_ex,
                                                                            "models")}
_FORMULA = re.compile(r"^[=+\-@\t\r]")
_NOT_QUERY = ("entity_type", "field_mappings", "prepare_id")


def _check_mappings(mappings: list[dict]) -> None:
    names: set[str] = set()
    for mapping in mappings:
        name = mapping.get("name") or mapping["field"]
        if name in names:
            raise errors.validation(f"field 'field_mappings': the name {name!r} appears more than once")
        names.add(name)
        keys = [v.get("key") for v in mapping.get("values") or []]
        if len(keys) != len(set(map(json.dumps, keys))):
            raise errors.validation(f"field 'field_mappings': a value key appears more than once for {name!r}")


def _page(ctx: CallContext, body: dict, page: int, size: int) -> list[dict]:
    name, handler, listed = _LISTERS[body["entity_type"]]
    request = {k: v for k, v in body.items() if k not in _NOT_QUERY}
    request.update(page=page, page_size=size)
    request.pop("scroll_id", None)
    request.pop("size", None)
    rows: list[dict] = handler(replace(ctx, endpoint=name), Request(request))[listed]
    return rows


def _key_prefix(prepare_id: str) -> str:
    return f"dl:{prepare_id}:"


def _forget_expired(ctx: CallContext, conn) -> None:
    c = t.server_meta.c
    now = clock.now()
    stale = [key for key, value in conn.execute(select(c.key, c.value).where(c.key.like("dl:%")))
             if json.loads(value).get("expires", 0) < now]
    if stale:
        conn.execute(delete(t.server_meta).where(c.key.in_(stale)))


@endpoint("organization.prepare_download_for_get_all")
def prepare(ctx: CallContext, req: Request) -> dict:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    _check_mappings(req.body["field_mappings"])
    body = {k: v for k, v in req.body.items() if k != "prepare_id"}
    _page(ctx, body, 0, 1)
    prepare_id = new_id()
    saved = json.dumps({"body": body, "user": ctx.identity.user, "expires": clock.now() + PREPARED_TTL_S})
    with ctx.store.tx() as conn:
        _forget_expired(ctx, conn)
        ctx.store.meta_set(conn, _key_prefix(prepare_id), saved)
    return {"prepare_id": prepare_id}


def _prepared(ctx: CallContext, prepare_id: str) -> dict:
    with ctx.store.tx() as conn:
        raw = ctx.store.meta_get(conn, _key_prefix(prepare_id))
    saved = json.loads(raw) if raw else None
    if not saved or saved["expires"] < clock.now() or saved["user"] != ctx.identity.user:
        raise errors.APIError(400, 10, f"Invalid prepare id (unknown, expired or another user's): "
                                       f"prepare_id={prepare_id}", {"prepare_id": prepare_id})
    body: dict = saved["body"]
    return body


def _cell(doc: dict, path: str, values: dict) -> Any:
    value = query.dotted_get(doc, path)
    if isinstance(value, dict):
        value = value.get("id", "")
    if isinstance(value, (str, int, float, bool)) and json.dumps(value) in values:
        value = values[json.dumps(value)]
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list) else str(value)
    return "'" + text if _FORMULA.match(text) else text


def _columns(body: dict) -> list[tuple[str, str, dict]]:
    return [(m.get("name") or m["field"], m["field"], {json.dumps(v.get("key")): v.get("value")
                                                       for v in m.get("values") or []})
            for m in body["field_mappings"]]


def _csv(ctx: CallContext, body: dict) -> str:
    columns = _columns(body)
    out = io.StringIO()
    out.write("\ufeff")  # the UTF-8 signature spreadsheets look for
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow([name for name, _, _ in columns])
    written, page = 0, 0
    while written < MAX_ROWS:
        rows = _page(ctx, body, page, min(PAGE, MAX_ROWS - written))
        writer.writerows([_cell(row, path, values) for _, path, values in columns] for row in rows)
        written, page = written + len(rows), page + 1
        if len(rows) < PAGE:
            break
    return out.getvalue()


def _filename(ctx: CallContext, body: dict) -> str:
    projects = body.get("project")
    project = projects[0] if isinstance(projects, list) and len(projects) == 1 else projects
    name = None
    if isinstance(project, str) and project:
        with ctx.store.tx() as conn:
            doc = ctx.store.get(conn, t.projects, project)
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(doc.get("basename") or ""))[:60] if doc else None
    return "-".join(filter(None, ("shipyard", name, f"{body['entity_type']}s.csv")))


@endpoint("organization.download_for_get_all")
def download(ctx: CallContext, req: Request) -> Response:
    schema.check(schema.REQUESTS[ctx.endpoint], req.body)
    body = _prepared(ctx, req.text("prepare_id", required=True))
    return Response(_csv(ctx, body), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{_filename(ctx, body)}"',
                             "X-Content-Type-Options": "nosniff"})
