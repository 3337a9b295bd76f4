"""tasks.*_hyper_params and tasks.*_configuration(s)."""
from __future__ import annotations

from server import errors
from server.rpc import schema
from server.rpc.registry import CallContext, Request, endpoint
from server.services.tasks import doc as taskdoc


def _load_many(ctx: CallContext, ids: list[str]) -> list[dict]:
    with ctx.store.tx() as conn:
        return [taskdoc.load(ctx, conn, task_id) for task_id in ids]


PROPERTIES = "properties"


def _properties_only(items: list[dict]) -> bool:
    """User properties (section "properties", any case) are editable in every status, as on the
    reference server; the SDK's `set_user_properties` edits them on running tasks without force."""
    for item in items:
        if str(item.get("section") or "").lower() == PROPERTIES:
            item["section"] = PROPERTIES
    return bool(items) and all(item.get("section") == PROPERTIES for item in items)


def _mutate(ctx: CallContext, req: Request, fn, *, any_status: bool = False, deleting: bool = False) -> dict:
    count = taskdoc.edit(ctx, req.id("task", "task"), req.flag("force"), fn, any_status=any_status)
    return {"updated": 1 if count else 0, "deleted": count} if deleting else {"updated": 1 if count else 0}


@endpoint("tasks.get_hyper_params")
def get_hyper_params(ctx: CallContext, req: Request) -> dict:
    out = []
    for doc in _load_many(ctx, req.str_list("tasks", []) or []):
        params = [
            {"section": section, "name": name, **{k: v for k, v in item.items() if k not in ("section", "name")}}
            for section, items in (doc.get("hyperparams") or {}).items() for name, item in items.items()
        ]
        out.append({"task": doc["id"], "hyperparams": params})
    return {"params": out}


def _param_items(ctx: CallContext, req: Request, key: str) -> list[dict]:
    """The request's list of items under `key`, checked against its spec in server/schema.py."""
    items = req.array(key, required=True)
    schema.check(schema.request_field(ctx.endpoint, key), items, key)
    return items


@endpoint("tasks.edit_hyper_params")
def edit_hyper_params(ctx: CallContext, req: Request) -> dict:
    items = _param_items(ctx, req, "hyperparams")
    replace = req.text("replace_hyperparams", "none")

    def fn(doc: dict) -> int:
        params = {} if replace == "all" else {k: dict(v) for k, v in (doc.get("hyperparams") or {}).items()}
        if replace == "section":
            for section in {i.get("section", "General") for i in items}:
                params[section] = {}
        for item in items:
            section = item.get("section") or "General"
            name = item.get("name")
            if not name:
                raise errors.validation("each hyperparameter needs a name")
            value = {"section": section, "name": name, "value": "" if item.get("value") is None else str(item["value"])}
            for extra in ("type", "description"):
                if item.get(extra) is not None:
                    value[extra] = item[extra]
            params.setdefault(section, {})[name] = value
        doc["hyperparams"] = params
        return len(items)

    return _mutate(ctx, req, fn, any_status=_properties_only(items))


@endpoint("tasks.delete_hyper_params")
def delete_hyper_params(ctx: CallContext, req: Request) -> dict:
    items = _param_items(ctx, req, "hyperparams")

    def fn(doc: dict) -> int:
        params = {k: dict(v) for k, v in (doc.get("hyperparams") or {}).items()}
        removed = 0
        for item in items:
            section, name = item.get("section"), item.get("name")
            if section in params and name is None:
                removed += len(params.pop(section))
            elif section in params and name in params[section]:
                del params[section][name]
                removed += 1
        doc["hyperparams"] = params
        return removed

    return _mutate(ctx, req, fn, any_status=_properties_only(items), deleting=True)


@endpoint("tasks.get_configurations")
def get_configurations(ctx: CallContext, req: Request) -> dict:
    names = req.str_list("names")
    out = []
    for doc in _load_many(ctx, req.str_list("tasks", []) or []):
        items = [dict(v, name=k) for k, v in (doc.get("configuration") or {}).items()
                 if not names or k in names]
        out.append({"task": doc["id"], "configuration": items})
    return {"configurations": out}


@endpoint("tasks.get_configuration_names")
def get_configuration_names(ctx: CallContext, req: Request) -> dict:
    return {"configurations": [{"task": d["id"], "names": sorted(d.get("configuration") or {})}
                               for d in _load_many(ctx, req.str_list("tasks", []) or [])]}


@endpoint("tasks.edit_configuration")
def edit_configuration(ctx: CallContext, req: Request) -> dict:
    items = _param_items(ctx, req, "configuration")

    def fn(doc: dict) -> int:
        config = {} if req.flag("replace_configuration") else dict(doc.get("configuration") or {})
        for item in items:
            if not item.get("name"):
                raise errors.validation("each configuration item needs a name")
            config[item["name"]] = {k: v for k, v in item.items() if v is not None}
        doc["configuration"] = config
        return len(items)

    return _mutate(ctx, req, fn)


@endpoint("tasks.delete_configuration")
def delete_configuration(ctx: CallContext, req: Request) -> dict:
    names = req.str_list("configuration", []) or []

    def fn(doc: dict) -> int:
        config = dict(doc.get("configuration") or {})
        removed = sum(1 for n in names if config.pop(n, None) is not None)
        doc["configuration"] = config
        return removed

    return _mutate(ctx, req, fn, deleting=True)
