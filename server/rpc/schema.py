"""Field types of what the API stores, in one declarative table.

The types follow the reference ClearML server's schema (apiserver/schema/services/*.conf:
tasks, models, projects, queues, workers, events); Shipyard only adds the fields it stores
itself. Write paths check what they are about to store against this table, so a value of
the wrong type is refused with a 400 naming the field instead of being stored and breaking
every later read. `/openapi.json` (server/services/openapi.py) publishes the same table.

    TASK, MODEL, PROJECT, QUEUE,        the documents' writable fields
    WORKER_REPORT, EVENTS
    GET_ALL                             the get_all query fields (checked by server/query.py)
    REQUESTS                            endpoint -> request body, where known
    request_field(endpoint, name)       the spec of one top-level field of a request body

The building blocks (Spec, STR, INT, NUM, BOOL, ANY, Enum, Obj, ListOf, MapOf, AnyOf), `check`
and `too_deep` are server/rpc/specs.py's, with the conventions they follow; they are imported
here, so callers keep writing `schema.check(schema.TASK, ...)`.
"""
from __future__ import annotations

from collections.abc import Mapping

from server.rpc.specs import ANY, BOOL, FLAG, INT, NULL, NUM, STR, AnyOf, Enum, ListOf, MapOf, Obj, Spec
from server.rpc.specs import MAX_DEPTH as MAX_DEPTH
from server.rpc.specs import Scalar as Scalar
from server.rpc.specs import check as check
from server.rpc.specs import too_deep as too_deep
from shipyard.protocol import RENEW_LEASES, SET_MESSAGES, WORKER_PREPARED, PrepareState, TaskStatus, TaskType

# -- the documents --------------------------------------------------------------------------

SCALAR = AnyOf(STR, NUM, BOOL)
STRS = ListOf(STR)
TAGS = STRS
METADATA_ITEM = Obj({"key": STR, "type": STR, "value": SCALAR})
METADATA = AnyOf(MapOf(METADATA_ITEM), ListOf(METADATA_ITEM))

SCRIPT = Obj({
    "binary": STR, "repository": STR, "tag": STR, "branch": STR, "version_num": STR,
    "entry_point": STR, "working_dir": STR, "diff": STR,
    "requirements": MapOf(AnyOf(STR, STRS, NULL)),  # {pip, conda, org_pip, ...}: a text or its lines
})
ARTIFACT = Obj({
    "key": STR, "type": STR, "mode": Enum("input", "output"), "uri": STR, "content_size": INT,
    "hash": STR, "timestamp": INT,
    "type_data": Obj({"preview": STR, "content_type": STR, "data_hash": STR}),
    "display_data": ListOf(ListOf(SCALAR)),
}, required=("key",))
EXECUTION = Obj({
    "queue": STR, "parameters": MapOf(ANY), "model": STR, "model_desc": AnyOf(MapOf(ANY), STR),
    "model_labels": MapOf(INT), "framework": STR, "docker_cmd": STR, "artifacts": ListOf(ARTIFACT),
})
TASK_MODEL = Obj({"name": STR, "model": STR, "updated": STR})
TASK_MODELS = Obj({"input": ListOf(TASK_MODEL), "output": ListOf(TASK_MODEL)})
OUTPUT = Obj({"destination": STR, "model": STR, "result": STR, "error": STR})
PARAM = Obj({"section": STR, "name": STR, "value": SCALAR, "type": STR, "description": STR})
HYPERPARAMS = MapOf(MapOf(PARAM))
CONFIG_ITEM = Obj({"name": STR, "value": STR, "type": STR, "description": STR})
CONFIGURATION = MapOf(CONFIG_ITEM)

TASK = Obj({
    "name": STR, "type": Enum(*TaskType), "comment": STR, "parent": STR, "project": STR,
    "tags": TAGS, "system_tags": TAGS, "script": SCRIPT, "execution": EXECUTION,
    "hyperparams": HYPERPARAMS, "configuration": CONFIGURATION, "runtime": MapOf(ANY),
    "container": MapOf(AnyOf(STR, NULL)),
    "models": TASK_MODELS, "output": OUTPUT,
})
MODEL = Obj({
    "name": STR, "uri": STR, "framework": STR, "comment": STR, "project": STR, "task": STR,
    "parent": STR, "labels": MapOf(INT), "design": AnyOf(MapOf(ANY), STR), "tags": TAGS,
    "system_tags": TAGS, "ready": BOOL, "metadata": METADATA, "last_iteration": INT,
})
PROJECT = Obj({"name": STR, "description": STR, "tags": TAGS, "system_tags": TAGS,
               "default_output_destination": STR})
QUEUE = Obj({"name": STR, "display_name": STR, "tags": TAGS, "system_tags": TAGS, "metadata": METADATA})
MACHINE_STATS = Obj({
    **{key: ListOf(NUM) for key in ("cpu_usage", "gpu_usage", "gpu_memory_free", "gpu_memory_used",
                                    "cpu_temperature", "gpu_temperature")},
    **{key: NUM for key in ("memory_used", "memory_free", "network_tx", "network_rx", "disk_free_home",
                            "disk_free_temp", "disk_read", "disk_write")},
})
WORKER = Obj({"worker": STR, "timeout": INT, "queues": STRS, "tags": TAGS, "system_tags": TAGS},
             required=("worker",))
WORKER_REPORT = Obj({"worker": STR, "task": STR, "queue": STR, "queues": STRS, "tags": TAGS, "system_tags": TAGS,
                     "timestamp": INT, "machine_stats": MACHINE_STATS,
                     WORKER_PREPARED: MapOf(Enum(*(str(s) for s in PrepareState)))}, required=("worker",))

_EVENT = Obj({"timestamp": NUM, "task": STR, "iter": INT, "metric": STR, "variant": STR, "worker": STR,
              "model_event": BOOL}, required=("task", "type"))
EVENTS = {
    "training_stats_scalar": _EVENT.with_fields({"type": Enum("training_stats_scalar"), "value": NUM,
                                                 "x_axis_label": STR}),
    "training_stats_vector": _EVENT.with_fields({"type": Enum("training_stats_vector"), "values": ListOf(NUM)}),
    "training_debug_image": _EVENT.with_fields({"type": Enum("training_debug_image"), "key": STR, "url": STR}),
    "plot": _EVENT.with_fields({"type": Enum("plot"), "plot_str": STR, "skip_validation": BOOL}),
    "log": _EVENT.with_fields({"type": Enum("log"), "level": STR, "msg": SCALAR}),
}
EVENT = AnyOf(*EVENTS.values())

# -- the requests ---------------------------------------------------------------------------

PATTERN = Obj({"pattern": STR, "fields": STRS, "datetime": AnyOf(STR, STRS)})
GET_ALL = Obj({
    "id": AnyOf(STR, STRS), "name": STR, "tags": AnyOf(STR, STRS), "system_tags": AnyOf(STR, STRS),
    "only_fields": AnyOf(STR, STRS), "order_by": AnyOf(STR, STRS), "page": INT, "page_size": INT,
    "search_hidden": FLAG, "_any_": PATTERN, "_all_": PATTERN,
})
TASK_REF = {"task": STR}
STATUS_CHANGE = {"task": STR, "force": FLAG, "status_reason": STR, "status_message": STR, "attempt": INT}
VARIANTS = AnyOf(STR, STRS, NULL)
METRICS_FILTER = AnyOf(ListOf(AnyOf(STR, Obj({"metric": STR, "variants": VARIANTS}, required=("metric",)))),
                       MapOf(VARIANTS))
HISTOGRAM = {"task": STR, "metrics": METRICS_FILTER, "key": Enum("iter", "timestamp", "iso_time"),
             "samples": INT}
MOVE = Obj({"queue": STR, "task": STR, "count": INT}, required=("queue", "task"))


def _req(fields: Mapping[str, Spec], *required: str) -> Obj:
    return Obj(fields, required=required)


def _task_write(**extra: Spec) -> dict[str, Spec]:
    return {**TASK.fields, **extra}


REQUESTS: dict[str, Spec] = {
    "auth.login": _req({"expiration_sec": INT}),
    "auth.create_credentials": _req({"label": STR, "expires_in_s": NUM}),
    "auth.extend_credentials": _req({"access_key": STR, "expires_in_s": NUM}, "access_key"),
    "auth.revoke_credentials": _req({"access_key": STR}, "access_key"),
    "debug.ping": _req({}),
    "server.info": _req({}),
    "tasks.create": _req(_task_write(output_dest=STR), "name", "type"),
    "tasks.edit": _req(_task_write(task=STR, force=FLAG, attempt=INT), "task"),
    "tasks.update": _req(_task_write(task=STR, force=FLAG, attempt=INT), "task"),
    "tasks.get_by_id": _req(TASK_REF, "task"),
    "tasks.get_all": GET_ALL.with_fields({"project": STRS, "status": STRS, "type": STRS, "parent": STRS}),
    "tasks.clone": _req({
        "task": STR, "new_task_name": STR, "new_task_comment": STR, "new_task_tags": STRS,
        "new_task_system_tags": STRS, "new_task_parent": STR, "new_task_project": STR, "new_project_name": STR,
        "new_task_hyperparams": HYPERPARAMS, "new_task_configuration": CONFIGURATION,
        "new_task_container": TASK.fields["container"], "new_task_input_models": ListOf(TASK_MODEL),
        "execution_overrides": EXECUTION}, "task"),
    "tasks.delete": _req({"task": STR, "force": FLAG}, "task"),
    "tasks.archive": _req({"tasks": STRS}, "tasks"),
    "tasks.archive_many": _req({"ids": STRS, "status_reason": STR, "status_message": STR}, "ids"),
    "tasks.unarchive_many": _req({"ids": STRS, "status_reason": STR, "status_message": STR}, "ids"),
    "tasks.stop_many": _req({"ids": STRS, "force": FLAG, "status_reason": STR, "status_message": STR}, "ids"),
    "tasks.enqueue_many": _req({"ids": STRS, "queue": STR, "queue_name": STR, "validate_tasks": FLAG,
                                "status_reason": STR, "status_message": STR}, "ids"),
    "tasks.delete_many": _req({"ids": STRS, "force": FLAG, "move_to_trash": FLAG, "return_file_urls": FLAG,
                               "delete_output_models": FLAG, "delete_external_artifacts": FLAG}, "ids"),
    "tasks.set_requirements": _req({"task": STR, "requirements": SCRIPT.fields["requirements"], "attempt": INT},
                                   "task", "requirements"),
    "tasks.add_or_update_artifacts": _req({"task": STR, "artifacts": ListOf(ARTIFACT), "force": FLAG},
                                          "task", "artifacts"),
    "tasks.delete_artifacts": _req({"task": STR, "artifacts": ListOf(Obj({"key": STR, "mode": STR})),
                                    "force": FLAG}, "task", "artifacts"),
    "tasks.add_or_update_model": _req({"task": STR, "name": STR, "model": STR, "type": Enum("input", "output"),
                                       "iteration": INT}, "task", "name", "model", "type"),
    "tasks.delete_models": _req({"task": STR, "models": ListOf(Obj({"name": STR, "type": STR}))},
                                "task", "models"),
    "tasks.get_hyper_params": _req({"tasks": STRS}, "tasks"),
    "tasks.edit_hyper_params": _req({"task": STR, "hyperparams": ListOf(PARAM), "force": FLAG,
                                     "replace_hyperparams": Enum("none", "section", "all")}, "task", "hyperparams"),
    "tasks.delete_hyper_params": _req({"task": STR, "hyperparams": ListOf(Obj({"section": STR, "name": STR})),
                                       "force": FLAG}, "task", "hyperparams"),
    "tasks.get_configurations": _req({"tasks": STRS, "names": STRS}, "tasks"),
    "tasks.get_configuration_names": _req({"tasks": STRS}, "tasks"),
    "tasks.edit_configuration": _req({"task": STR, "configuration": ListOf(CONFIG_ITEM), "force": FLAG,
                                      "replace_configuration": FLAG}, "task", "configuration"),
    "tasks.delete_configuration": _req({"task": STR, "configuration": STRS, "force": FLAG},
                                       "task", "configuration"),
    **{name: _req(STATUS_CHANGE, "task") for name in (
        "tasks.started", "tasks.stopped", "tasks.failed", "tasks.close", "tasks.stop", "tasks.ping")},
    "tasks.completed": _req({**STATUS_CHANGE, "publish": FLAG}, "task"),
    "tasks.publish": _req({**STATUS_CHANGE, "publish_model": FLAG}, "task"),
    "tasks.enqueue": _req({**STATUS_CHANGE, "queue": STR, "queue_name": STR}, "task"),
    "tasks.dequeue": _req({**STATUS_CHANGE, "new_status": Enum(*TaskStatus)}, "task"),
    "tasks.reset": _req({**STATUS_CHANGE, "clear_all": FLAG}, "task"),
    "tasks.start_run": _req({**STATUS_CHANGE, "attempt": INT, "expires_in_s": NUM}, "task", "attempt"),
    "tasks.record_exit": _req({"task": STR, "attempt": INT, "exit_code": INT}, "task", "attempt", "exit_code"),
    "tasks.wait_status": _req({"task": STR, "status": STR, "status_message": STR, "wait_s": NUM}, "task"),
    "tasks.renew_lease": _req({"task": STR, "attempt": INT, "lease_s": NUM}, "task", "attempt"),
    "tasks.release": _req({"task": STR, "attempt": INT, "retry": FLAG, "reason": STR}, "task", "attempt"),
    "models.create": _req(MODEL.fields, "name"),
    "models.edit": _req({**MODEL.fields, "model": STR}, "model"),
    "models.update": _req({**MODEL.fields, "model": STR}, "model"),
    "models.update_for_task": _req({**{k: MODEL.fields[k] for k in ("uri", "name", "comment", "tags",
                                                                    "system_tags")},
                                    "task": STR, "override_model_id": STR, "iteration": INT}, "task"),
    "models.get_by_id": _req({"model": STR}, "model"),
    "models.get_by_task_id": _req(TASK_REF, "task"),
    "models.get_all": GET_ALL.with_fields({"project": STRS, "task": STRS, "ready": FLAG, "framework": STRS,
                                           "user": STRS, "uri": STRS}),
    "models.set_ready": _req({"model": STR, "publish_task": FLAG, "force_publish_task": FLAG}, "model"),
    "models.publish": _req({"model": STR, "publish_task": FLAG, "force_publish_task": FLAG}, "model"),
    "models.delete": _req({"model": STR, "force": FLAG}, "model"),
    "models.add_or_update_metadata": _req({"model": STR, "metadata": ListOf(METADATA_ITEM),
                                           "replace_metadata": FLAG}, "model", "metadata"),
    "models.delete_metadata": _req({"model": STR, "keys": STRS}, "model", "keys"),
    "models.archive_many": _req({"ids": STRS}, "ids"),
    "models.unarchive_many": _req({"ids": STRS}, "ids"),
    "models.get_frameworks": _req({"projects": STRS}),
    "projects.create": _req(PROJECT.fields, "name"),
    "projects.update": _req({**PROJECT.fields, "project": STR}, "project"),
    "projects.get_by_id": _req({"project": STR}, "project"),
    "projects.get_all": GET_ALL.with_fields({"parent": STRS, "shallow_search": FLAG}),
    "projects.delete": _req({"project": STR, "force": FLAG, "delete_contents": FLAG}, "project"),
    "queues.create": _req({k: QUEUE.fields[k] for k in ("name", "display_name", "tags", "system_tags")}, "name"),
    "queues.update": _req({**QUEUE.fields, "queue": STR}, "queue"),
    "queues.get_by_id": _req({"queue": STR}, "queue"),
    "queues.get_all": GET_ALL,
    "queues.get_default": _req({}),
    "queues.delete": _req({"queue": STR, "force": FLAG}, "queue"),
    "queues.add_task": _req({"queue": STR, "task": STR}, "queue", "task"),
    "queues.remove_task": _req({"queue": STR, "task": STR, "update_task_status": FLAG}, "queue", "task"),
    "queues.get_num_entries": _req({"queue": STR}, "queue"),
    "queues.peek_task": _req({"queue": STR}, "queue"),
    "queues.clear_queue": _req({"queue": STR}, "queue"),
    "queues.move_task_forward": MOVE, "queues.move_task_backward": MOVE,
    "queues.move_task_to_front": MOVE, "queues.move_task_to_back": MOVE,
    "queues.get_next_task": _req({"queue": STR, "queues": STRS, "get_task_info": FLAG, "wait_s": NUM,
                                  "lease_s": NUM, "worker": STR, "with_task": FLAG, "count": INT}),
    "workers.register": WORKER,
    "workers.unregister": _req({"worker": STR}, "worker"),
    "workers.status_report": WORKER_REPORT,
    "workers.get_all": _req({"last_seen": INT}),
    "workers.get_count": _req({"last_seen": INT}),
    "workers.reconcile": _req({"worker": STR}, "worker"),
    "events.add": EVENT,
    "events.add_batch": Obj({"events": ListOf(EVENT)}),
    "events.download_task_log": _req({"task": STR, "line_type": Enum("json", "text")}, "task"),
    "events.get_task_events": _req({"task": STR, "batch_size": INT, "order": Enum("asc", "desc"),
                                    "event_type": AnyOf(STR, STRS), "metrics": METRICS_FILTER,
                                    "scroll_id": STR}, "task"),
    "events.delete_for_task": _req(TASK_REF, "task"),
    "events.clear_task_log": _req({"task": STR, "threshold_sec": INT}, "task"),
    "events.scalar_metrics_iter_histogram": _req(HISTOGRAM, "task"),
    "events.multi_task_scalar_metrics_iter_histogram": _req({**HISTOGRAM, "tasks": STRS}, "tasks"),
    "events.get_task_single_value_metrics": _req({"tasks": STRS, "metrics": METRICS_FILTER, "model_events": FLAG},
                                                 "tasks"),
    "events.get_task_latest_scalar_values": _req(TASK_REF, "task"),
    "events.get_scalar_metrics_and_variants": _req(TASK_REF, "task"),
    "events.vector_metrics_iter_histogram": _req({"task": STR, "metric": STR, "variant": STR},
                                                 "task", "metric", "variant"),
    "events.get_task_plots": _req({"task": STR, "iters": INT, "batch_size": INT, "metrics": METRICS_FILTER,
                                   "scroll_id": STR}, "task"),
    "events.debug_images": _req({"metrics": ListOf(Obj({"task": STR, "metric": STR, "variants": AnyOf(STR, STRS)},
                                                       required=("task",))),
                                 "iters": INT, "navigate_earlier": FLAG, "refresh": FLAG, "scroll_id": STR},
                                "metrics"),
    # --- issue 19: what the official web UI calls to start and sign in; users (a key is a user),
    # their preferences, the one organization (server/services/{basic,users,organization}.py).
    "login.supported_modes": _req({"callback_url_prefix": STR, "state": STR}),
    "login.logout": _req({}),
    "auth.logout": _req({}),
    "server.report_stats_option": _req({"enabled": FLAG}),
    "server.get_stats": _req({"interval": INT}),
    "users.get_current_user": _req({}),
    "users.get_all": _req({"id": STRS, "name": STR, "only_fields": STRS, "order_by": STRS, "page": INT,
                           "page_size": INT}),
    "users.get_all_ex": _req({"id": STRS, "name": STR, "only_fields": STRS, "order_by": STRS, "page": INT,
                              "page_size": INT, "active_in_projects": STRS}),
    "users.get_by_id": _req({"user": STR}, "user"),
    "users.get_preferences": _req({}),
    "users.set_preferences": _req({"preferences": MapOf(ANY)}, "preferences"),
    "organization.get_tags": _req({"include_system": FLAG, "filter": Obj({"tags": STRS, "system_tags": STRS})}),
    "organization.get_user_companies": _req({}),
    "organization.get_entities_count": _req({
        **{k: MapOf(ANY) for k in ("projects", "tasks", "models", "pipelines", "datasets", "reports")},
        "search_hidden": FLAG, "active_users": STRS, "allow_public": FLAG}),
}

# -- events family (issue 19): the reads the official web UI makes, per the schema's events.conf --
EVENT_TYPE = Enum("training_stats_scalar", "training_stats_vector", "training_debug_image", "plot", "log")
METRIC_VARIANTS = Obj({"metric": STR, "variants": STRS})
TASK_METRIC_VARIANTS = ListOf(Obj({"task": STR, "metric": STR, "variants": AnyOf(STR, STRS)}, required=("task",)))
_SAMPLE = {"task": STR, "metric": STR, "iteration": INT, "refresh": FLAG, "scroll_id": STR,
           "navigate_current_metric": FLAG, "model_events": FLAG}
_NEXT_SAMPLE = {"task": STR, "scroll_id": STR, "navigate_earlier": FLAG, "next_iteration": FLAG,
                "model_events": FLAG}
REQUESTS.update({
    "events.plots": _req({"metrics": TASK_METRIC_VARIANTS, "iters": INT, "navigate_earlier": FLAG, "refresh": FLAG,
                          "scroll_id": STR, "model_events": FLAG}, "metrics"),
    "events.get_debug_image_sample": _req({**_SAMPLE, "variant": STR}, "task", "metric", "variant"),
    "events.next_debug_image_sample": _req(_NEXT_SAMPLE, "task", "scroll_id"),
    "events.get_plot_sample": _req(_SAMPLE, "task", "metric"),
    "events.next_plot_sample": _req(_NEXT_SAMPLE, "task", "scroll_id"),
    "events.get_task_metrics": _req({"tasks": STRS, "event_type": EVENT_TYPE, "model_events": FLAG}, "tasks"),
    "events.get_multi_task_metrics": _req({"tasks": STRS, "event_type": EVENT_TYPE, "model_events": FLAG}, "tasks"),
    "events.get_multi_task_plots": _req({"tasks": STRS, "iters": INT, "scroll_id": STR, "no_scroll": FLAG,
                                         "model_events": FLAG, "last_iters_per_task_metric": FLAG,
                                         "metrics": METRICS_FILTER}, "tasks"),
    "events.scalar_metrics_iter_raw": _req({"task": STR, "metric": METRIC_VARIANTS.with_fields({}, ("metric",)),
                                            "key": Enum("iter", "timestamp", "iso_time"), "batch_size": INT,
                                            "count_total": FLAG, "scroll_id": STR, "model_events": FLAG},
                                           "task", "metric"),
    "events.get_scalar_metric_data": _req({"task": STR, "metric": STR, "scroll_id": STR, "no_scroll": FLAG,
                                           "model_events": FLAG}, "task", "metric"),
    "events.get_vector_metrics_and_variants": _req({"task": STR, "model_events": FLAG}, "task"),
    "events.get_task_log": _req({"task": STR, "batch_size": INT, "navigate_earlier": FLAG, "from_timestamp": NUM,
                                 "order": Enum("asc", "desc"), "metrics": METRICS_FILTER}, "task"),
    "events.clear_scroll": _req({"scroll_id": STR}, "scroll_id"),
    "events.delete_for_model": _req({"model": STR, "allow_locked": FLAG}, "model"),
})
for _name in ("tasks.get_all", "models.get_all", "projects.get_all", "queues.get_all"):
    REQUESTS[_name.replace("get_all", "get_all_ex")] = REQUESTS[_name]

# -- projects family (issue 19): the project tree, statistics and distinct-value queries -------
_STATE = AnyOf(Enum("active", "archived"), NULL)
_ID_OR_IDS = AnyOf(STR, STRS)  # a single id is read as a one-item list (Request.array)
_TAGS_FILTER = Obj({"tags": ListOf(AnyOf(STR, NULL)), "system_tags": ListOf(AnyOf(STR, NULL))})
_TAGS_REQUEST = _req({"projects": _ID_OR_IDS, "include_system": FLAG, "filter": _TAGS_FILTER})
_PAGE = {"page": INT, "page_size": INT}
_IN_PROJECTS = {"projects": _ID_OR_IDS, "include_subprojects": FLAG, "allow_public": FLAG}
REQUESTS.update({
    "projects.get_all_ex": GET_ALL.with_fields({
        "parent": _ID_OR_IDS, "shallow_search": FLAG, "include_stats": FLAG, "stats_for_state": _STATE,
        "stats_with_children": FLAG, "check_own_contents": FLAG, "include_stats_filter": MapOf(AnyOf(STR, ListOf(AnyOf(SCALAR, NULL)))),
        "non_public": FLAG, "allow_public": FLAG, "active_users": _ID_OR_IDS, "include_dataset_stats": FLAG,
        "children_type": Enum("pipeline", "report", "dataset"), "children_tags": ListOf(AnyOf(STR, NULL))}),
    "projects.delete": _req({"project": STR, "force": FLAG, "delete_contents": FLAG,
                             "delete_external_artifacts": FLAG}, "project"),
    "projects.validate_delete": _req({"project": STR}, "project"),
    "projects.move": _req({"project": STR, "new_location": STR}, "project"),
    "projects.merge": _req({"project": STR, "destination_project": STR}, "project"),
    "projects.make_public": _req({"ids": _ID_OR_IDS}),
    "projects.make_private": _req({"ids": _ID_OR_IDS}),
    "projects.get_task_tags": _TAGS_REQUEST,
    "projects.get_model_tags": _TAGS_REQUEST,
    "projects.get_project_tags": _TAGS_REQUEST,
    "projects.get_task_parents": _req({"projects": _ID_OR_IDS, "include_subprojects": FLAG, "tasks_state": _STATE,
                                       "task_name": STR}),
    "projects.get_hyper_parameters": _req({"project": STR, "include_subprojects": FLAG, **_PAGE}, "project"),
    "projects.get_hyperparam_values": _req({**_IN_PROJECTS, **_PAGE, "section": STR, "name": STR, "pattern": STR},
                                           "section", "name"),
    "projects.get_unique_metric_variants": _req({"project": STR, "include_subprojects": FLAG,
                                                 "model_metrics": FLAG, "ids": _ID_OR_IDS}),
    "projects.get_model_metadata_keys": _req({"project": STR, "include_subprojects": FLAG, **_PAGE}, "project"),
    "projects.get_model_metadata_values": _req({**_IN_PROJECTS, **_PAGE, "key": STR}, "key"),
    "projects.get_user_names": _req({"projects": _ID_OR_IDS, "include_subprojects": FLAG,
                                     "entity": Enum("task", "model")}),
})


# -- workers, queues and models (issue 19): the reference schema's fields at the UI's version --
_WORKER_FILTER = {"last_seen": INT, "tags": STRS, "system_tags": STRS, "worker_pattern": STR}
_TIME_RANGE = {"from_date": NUM, "to_date": NUM, "interval": INT}
_IDS = {"ids": STRS}
_MODEL_QUERY = {"project": STRS, "task": STRS, "ready": FLAG, "framework": STRS, "user": STRS, "uri": STRS}
_QUEUE_LIST = GET_ALL.with_fields({"max_task_entries": INT, "search_hidden": FLAG, "count_task_entries": FLAG,
                                   "scroll_id": STR, "refresh_scroll": FLAG, "size": INT})
REQUESTS.update({
    "workers.get_all": _req(_WORKER_FILTER),
    "workers.get_count": _req(_WORKER_FILTER),
    "workers.get_metric_keys": _req({"worker_ids": STRS}),
    "workers.get_stats": _req({**_TIME_RANGE, "worker_ids": STRS, "split_by_variant": FLAG,
                               "items": ListOf(Obj({"key": STR, "aggregation": Enum("avg", "min", "max")},
                                                   required=("key",)))},
                              "from_date", "to_date", "interval", "items"),
    "workers.get_activity_report": _req(_TIME_RANGE, "from_date", "to_date", "interval"),
    "queues.get_all": _QUEUE_LIST,
    "queues.get_all_ex": _QUEUE_LIST,
    "queues.get_by_id": _req({"queue": STR, "max_task_entries": INT}, "queue"),
    "queues.add_task": _req({"queue": STR, "task": STR, "update_execution_queue": FLAG}, "queue", "task"),
    "queues.get_next_task": _req({"queue": STR, "queues": STRS, "get_task_info": FLAG, "wait_s": NUM,
                                  "lease_s": NUM, "worker": STR, "task": STR, "with_task": FLAG,
                                  "count": INT}),
    SET_MESSAGES: _req({"tasks": ListOf(Obj({"task": STR, "attempt": INT, "status_message": STR, "expect": STR},
                                            required=("task", "attempt", "status_message", "expect")))},
                       "tasks"),
    RENEW_LEASES: _req({"tasks": ListOf(Obj({"task": STR, "attempt": INT}, required=("task", "attempt"))),
                        "lease_s": NUM}, "tasks"),
    "queues.get_queue_metrics": _req({**_TIME_RANGE, "queue_ids": STRS, "refresh": FLAG},
                                     "from_date", "to_date", "interval"),
    "queues.add_or_update_metadata": _req({"queue": STR, "metadata": ListOf(METADATA_ITEM.with_fields({}, ("key",))),
                                           "replace_metadata": FLAG}, "queue", "metadata"),
    "queues.delete_metadata": _req({"queue": STR, "keys": STRS}, "queue", "keys"),
    "models.get_all_ex": GET_ALL.with_fields({**_MODEL_QUERY, "include_stats": FLAG, "include_subprojects": FLAG,
                                              "allow_public": FLAG, "scroll_id": STR, "refresh_scroll": FLAG,
                                              "size": INT}),
    "models.get_by_id_ex": GET_ALL.with_fields(_MODEL_QUERY),
    "models.delete": _req({"model": STR, "force": FLAG}, "model"),
    "models.delete_many": _req({**_IDS, "force": FLAG, "delete_external_artifacts": FLAG}, "ids"),
    "models.publish_many": _req({**_IDS, "force_publish_task": FLAG, "publish_task": FLAG,
                                 "publish_tasks": FLAG}, "ids"),
    "models.archive_many": _req(_IDS, "ids"),
    "models.unarchive_many": _req(_IDS, "ids"),
    "models.make_public": _req(_IDS),
    "models.make_private": _req(_IDS),
    "models.move": _req({**_IDS, "project": STR, "project_name": STR}, "ids"),
    "models.update_tags": _req({**_IDS, "add_tags": STRS, "remove_tags": STRS}),
})


# -- the tasks family (issue 19): the task table's query, bulk edits and batch operations ---------
LIST_FILTER = AnyOf(STR, ListOf(AnyOf(STR, NULL)))  # values, "__$not"/"__$all"/... operators, null
DATE_FILTER = AnyOf(STR, ListOf(AnyOf(STR, NULL)))  # ">=2024-01-01" (a list ANDs) or [from, to]
FIELD_FILTER = Obj({"any": Obj({"include": ListOf(AnyOf(STR, NULL)), "exclude": ListOf(AnyOf(STR, NULL))}),
                    "all": Obj({"include": ListOf(AnyOf(STR, NULL)), "exclude": ListOf(AnyOf(STR, NULL))}),
                    "op": Enum("and", "or")})
TASK_QUERY = GET_ALL.with_fields({
    **{k: LIST_FILTER for k in ("id", "user", "project", "status", "type", "parent", "tags", "system_tags",
                                "execution.queue", "models.input.model")},
    **{k: DATE_FILTER for k in ("created", "started", "last_update", "last_change", "status_changed")},
    "scroll_id": STR, "refresh_scroll": FLAG, "size": INT, "filters": MapOf(FIELD_FILTER),
    "include_subprojects": FLAG, "allow_public": FLAG,
})
BATCH = {"ids": STRS, "status_reason": STR, "status_message": STR}
FILE_URLS = {"return_file_urls": FLAG, "delete_output_models": FLAG, "delete_external_artifacts": FLAG}
REQUESTS.update({
    "tasks.get_all": TASK_QUERY,
    "tasks.get_all_ex": TASK_QUERY,
    "tasks.get_by_id_ex": TASK_QUERY.with_fields({}, required=("id",)),
    "tasks.get_types": _req({"projects": STRS}),
    "tasks.move": _req({"ids": STRS, "project": AnyOf(STR, NULL), "project_name": STR}, "ids"),
    "tasks.validate": _req(_task_write(output_dest=STR), "name", "type"),
    "tasks.update_tags": _req({"ids": STRS, "add_tags": STRS, "remove_tags": STRS}, "ids"),
    "tasks.make_public": _req({"ids": STRS}),
    "tasks.make_private": _req({"ids": STRS}),
    "tasks.delete": _req({"task": STR, "force": FLAG, "move_to_trash": FLAG, **FILE_URLS}, "task"),
    "tasks.reset": _req({**STATUS_CHANGE, "clear_all": FLAG, **FILE_URLS}, "task"),
    "tasks.reset_many": _req({**BATCH, "force": FLAG, "clear_all": FLAG, **FILE_URLS}, "ids"),
    "tasks.publish_many": _req({**BATCH, "force": FLAG, "publish_model": FLAG}, "ids"),
    "tasks.dequeue_many": _req({**BATCH, "remove_from_all_queues": FLAG, "new_status": Enum(*TaskStatus)}, "ids"),
})


def request_field(endpoint: str, name: str) -> Spec:
    """The spec of one top-level field of `endpoint`'s request body (the endpoint's body is an object)."""
    spec = REQUESTS[endpoint]
    if not isinstance(spec, Obj):
        raise KeyError(f"{endpoint}'s request is not an object")
    return spec.fields[name]


# -- the rest of issue 19 (i19-rest): reports, pipelines, the caller's own account, the server's
# catalogue, table export, tasks.update_batch and projects.get_all_ex scroll paging
# (server/services/{reports,pipelines,account,catalog,export}.py) --------------------------------
_REPORT_FIELDS = {"name": STR, "tags": STRS, "comment": STR, "report": STR, "report_assets": STRS}
_REPORT_TASK = {"task": STR, "comment": STR}
_SCROLL: dict[str, Spec] = {"scroll_id": STR, "refresh_scroll": FLAG, "size": INT}
_METRIC_VARIANTS_LIST = ListOf(Obj({"metric": STR, "variants": STRS}))
_FIELD_MAPPING = Obj({"field": STR, "name": STR, "values": ListOf(Obj({"key": ANY, "value": STR}))},
                     required=("field",))
_PROJECTS_EX = REQUESTS["projects.get_all_ex"]
assert isinstance(_PROJECTS_EX, Obj)
REQUESTS.update({
    "projects.get_all_ex": _PROJECTS_EX.with_fields(_SCROLL),
    "reports.create": _req({**_REPORT_FIELDS, "project": STR}, "name"),
    "reports.update": _req({**_REPORT_FIELDS, "task": STR}, "task"),
    "reports.move": _req({"task": STR, "project": AnyOf(STR, NULL), "project_name": STR}, "task"),
    "reports.publish": _req(_REPORT_TASK, "task"),
    "reports.archive": _req(_REPORT_TASK, "task"),
    "reports.unarchive": _req(_REPORT_TASK, "task"),
    "reports.delete": _req({"task": STR, "force": FLAG}, "task"),
    "reports.get_tags": _req({}),
    "reports.get_all_ex": TASK_QUERY.with_fields({"status": ListOf(Enum("created", "published"))}),
    "reports.get_task_data": TASK_QUERY.with_fields({
        "model_events": FLAG, "single_value_metrics": Obj({}),
        "plots": Obj({"iters": INT, "metrics": _METRIC_VARIANTS_LIST, "last_iters_per_task_metric": FLAG}),
        "debug_images": Obj({"iters": INT, "metrics": _METRIC_VARIANTS_LIST}),
        "scalar_metrics_iter_histogram": Obj({"samples": INT, "key": Enum("iter", "timestamp", "iso_time"),
                                              "metrics": _METRIC_VARIANTS_LIST})}),
    "pipelines.start_pipeline": _req({"task": STR, "queue": STR, "verify_watched_queue": FLAG,
                                      "args": ListOf(Obj({"name": STR, "value": AnyOf(STR, NULL)},
                                                         required=("name",)))}, "task"),
    "pipelines.delete_runs": _req({"ids": STRS, "project": STR}, "ids", "project"),
    "auth.get_credentials": _req({}),
    "auth.edit_credentials": _req({"access_key": STR, "label": STR}, "access_key"),
    "users.update": _req({"user": STR, "name": STR, "given_name": STR, "family_name": STR, "avatar": STR}, "user"),
    "server.endpoints": _req({}),
    "storage.get_settings": _req({}),
    "organization.prepare_download_for_get_all": TASK_QUERY.with_fields(
        {"entity_type": Enum("task", "model"), "only_fields": STRS, "search_hidden": FLAG, "allow_public": FLAG,
         "field_mappings": ListOf(_FIELD_MAPPING)}, required=("entity_type", "only_fields", "field_mappings")),
    "organization.download_for_get_all": _req({"prepare_id": STR}, "prepare_id"),
})
