"""`GET /openapi.json`: the API as an OpenAPI 3.1 document, generated from the endpoint registry
and the field-type table (server/schema.py).

Every registered endpoint is one POST path (`/tasks.create`), with its request body's schema
where the table knows it (a free-form object otherwise) and ClearML's `{meta, data}` envelope as
the answer. Public: it describes the protocol and holds no data.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from starlette.responses import Response

from server.auth.keys import API_VERSION, SERVER_VERSION
from server.rpc import jsonutil, registry, schema
from server.rpc.registry import CallContext, Request, endpoint

NAME = "openapi.json"

_META = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "trx": {"type": "string"},
        "endpoint": {"type": "object", "properties": {"name": {"type": "string"},
                                                      "requested_version": {"type": "string"},
                                                      "actual_version": {"type": "string"}}},
        "result_code": {"type": "integer"}, "result_subcode": {"type": "integer"},
        "result_msg": {"type": "string"}, "error_stack": {}, "error_data": {"type": "object"},
    },
}
_ENVELOPE = {"type": "object", "required": ["meta", "data"],
             "properties": {"meta": {"$ref": "#/components/schemas/Meta"}, "data": {"type": "object"}}}


def _operation(name: str) -> dict[str, Any]:
    spec = schema.REQUESTS.get(name)
    body = spec.json_schema() if spec is not None else {"type": "object"}
    answer = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}}
    operation: dict[str, Any] = {
        "operationId": name,
        "tags": [name.split(".", 1)[0]],
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "OK: the answer is in `data`", **answer},
                      "default": {"description": "An error: `meta.result_code`, `result_subcode` and "
                                                 "`result_msg` say what went wrong", **answer}},
    }
    if registry.is_public(name):
        operation["security"] = []
    if spec is None:
        operation["x-shipyard-schema"] = "not described: any JSON object"
    return operation


@lru_cache(maxsize=1)
def document() -> bytes:
    """The OpenAPI document (built once: the registry does not change after start-up)."""
    paths = {f"/{name}": {"post": _operation(name)} for name in registry.names() if name != NAME}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "Shipyard API (the ClearML REST protocol)", "version": API_VERSION,
                 "description": "Every call is POST /<service>.<action> (or /v<version>/<service>.<action>) "
                                "with a JSON body; the answer is ClearML's {meta, data} envelope. "
                                f"Server version {SERVER_VERSION}."},
        "paths": paths,
        "components": {
            "schemas": {"Envelope": _ENVELOPE, "Meta": _META},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token from auth.login"},
                                "basic": {"type": "http", "scheme": "basic",
                                          "description": "access key and secret key (auth.login only)"}},
        },
        "security": [{"bearer": []}],
    }
    return jsonutil.dumps_bytes(doc)


@endpoint(NAME, public=True)
def openapi(ctx: CallContext, req: Request) -> Response:
    return Response(document(), media_type="application/json")
