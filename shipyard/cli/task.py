"""`shipyard task ...` and `shipyard queue ...`: create, clone, enqueue, abort, show, follow logs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from shipyard.cli.state import CliState, pass_state
from shipyard.client.recorder import args_to_hyperparams, record_local_script, record_remote
from shipyard.errors import ConfigError


def _project_id(api, name: str | None) -> str | None:
    if not name:
        return None
    import re
    rows = api.call("projects.get_all", {"name": f"^{re.escape(name)}$", "only_fields": ["id"]})["projects"]
    return rows[0]["id"] if rows else api.call("projects.create", {"name": name})["id"]


def _enqueue(api, task_id: str, queue: str) -> None:
    import re
    body = {"task": task_id}
    if re.match(r"^[a-f0-9]{32}$", queue):
        body["queue"] = queue
    else:
        body["queue_name"] = queue
    api.call("tasks.enqueue", body)
    click.echo(f"enqueued {task_id} to {queue}")


@click.group("task")
def task_group() -> None:
    """Create, clone, enqueue, abort and inspect tasks (no SDK needed)."""


@task_group.command("create")
@click.option("--script", type=click.Path(path_type=Path), help="A local script (in a git repo or not), "
              "or with --repo the entry point inside that repository.")
@click.option("--repo", help="A remote repository URL to run from instead of a local script.")
@click.option("--branch")
@click.option("--commit")
@click.option("--cwd", "working_dir", help="Working directory (relative to the repository root).")
@click.option("--project", default="default", show_default=True)
@click.option("--name", help="Task name (default: the script's name).")
@click.option("--args", "args", multiple=True, help="name=value for the Args section (repeatable).")
@click.option("--requirements", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="A requirements file to record instead of the repository's.")
@click.option("--queue", help="Enqueue the new task to this queue.")
@click.option("--type", "task_type", default="training", show_default=True)
@pass_state
def create_cmd(state: CliState, script, repo, branch, commit, working_dir, project, name, args, requirements,
               queue, task_type) -> None:
    """Record a script as a task (as the clearml SDK would) and optionally enqueue it."""
    if not script:
        raise ConfigError("--script is required")
    if repo:
        section = record_remote(repo, str(script), branch=branch, commit=commit, working_dir=working_dir or ".")
    else:
        section = record_local_script(script, Path(working_dir).resolve() if working_dir else None)
    if requirements:
        section["requirements"] = {"pip": requirements.read_text()}
    api = state.api
    body = {"name": name or Path(str(script)).stem, "type": task_type, "script": section,
            "hyperparams": args_to_hyperparams(list(args)) if args else {}}
    project_id = _project_id(api, project)
    if project_id:
        body["project"] = project_id
    task_id = api.call("tasks.create", body)["id"]
    click.echo(task_id)
    if queue:
        _enqueue(api, task_id, queue)


@task_group.command("clone")
@click.argument("task_id")
@click.option("--name")
@click.option("--set", "overrides", multiple=True, help="Section/name=value (repeatable), e.g. Args/lr=0.1.")
@click.option("--queue", help="Enqueue the clone to this queue.")
@pass_state
def clone_cmd(state: CliState, task_id, name, overrides, queue) -> None:
    """Clone a task, change parameters, and optionally enqueue the clone."""
    api = state.api
    body = {"task": task_id}
    if name:
        body["new_task_name"] = name
    new_id = api.call("tasks.clone", body)["id"]
    if overrides:
        params = [{"section": sec, "name": key, "value": item["value"]}
                  for sec, items in args_to_hyperparams(list(overrides)).items() for key, item in items.items()]
        api.call("tasks.edit_hyper_params", {"task": new_id, "hyperparams": params})
    click.echo(new_id)
    if queue:
        _enqueue(api, new_id, queue)


@task_group.command("enqueue")
@click.argument("task_id")
@click.option("--queue", default="default", show_default=True)
@pass_state
def enqueue_cmd(state: CliState, task_id, queue) -> None:
    _enqueue(state.api, task_id, queue)


@task_group.command("abort")
@click.argument("task_id")
@pass_state
def abort_cmd(state: CliState, task_id) -> None:
    """Ask the task's agent to stop it (TERM, grace, KILL); a queued task is dequeued and stopped."""
    fields = state.api.call("tasks.stop", {"task": task_id, "status_reason": "aborted from the CLI"})["fields"]
    click.echo(f"{task_id}: {fields.get('status') or fields.get('status_message')}")


@task_group.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
@pass_state
def show_cmd(state: CliState, task_id, as_json) -> None:
    task = state.api.call("tasks.get_by_id", {"task": task_id})["task"]
    if as_json:
        click.echo(json.dumps(task, indent=2))
        return
    script = task.get("script") or {}
    for label, value in (("id", task["id"]), ("name", task.get("name")), ("status", task.get("status")),
                         ("reason", task.get("status_reason")), ("repository", script.get("repository")),
                         ("commit", script.get("version_num")), ("entry point", script.get("entry_point")),
                         ("worker", task.get("last_worker"))):
        click.echo(f"{label:12s} {value or '-'}")
    for section, items in (task.get("hyperparams") or {}).items():
        for key, item in items.items():
            click.echo(f"{'param':12s} {section}/{key} = {item.get('value')}")


def _print_events(events: list[dict]) -> None:
    for event in events:
        for line in str(event.get("msg", "")).split("\n"):
            click.echo(line)


@task_group.command("logs")
@click.argument("task_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the task ends.")
@pass_state
def logs_cmd(state: CliState, task_id, follow) -> None:
    api = state.api
    seen = 0
    while True:
        data = api.call("events.get_task_events", {"task": task_id, "event_type": "log", "order": "asc",
                                                   "batch_size": 10000})
        events = data.get("events") or []
        _print_events(events[seen:])
        seen = len(events)
        if not follow:
            return
        status = api.call("tasks.get_all", {"id": [task_id], "only_fields": ["status"]})["tasks"][0]["status"]
        if status not in ("queued", "in_progress", "created"):
            data = api.call("events.get_task_events", {"task": task_id, "event_type": "log", "order": "asc",
                                                       "batch_size": 10000})
            _print_events((data.get("events") or [])[seen:])
            click.echo(f"-- task {status}")
            return
        time.sleep(0.5)


@task_group.command("list")
@click.option("--project")
@click.option("--status", multiple=True)
@click.option("--limit", default=50, show_default=True)
@pass_state
def list_tasks_cmd(state: CliState, project, status, limit) -> None:
    api = state.api
    body = {"order_by": ["-last_update"], "page": 0, "page_size": limit,
            "only_fields": ["name", "status", "last_update", "status_reason"]}
    if status:
        body["status"] = list(status)
    if project:
        body["project"] = [_project_id(api, project)]
    for task in api.call("tasks.get_all", body)["tasks"]:
        click.echo(f"{task['id']}  {task.get('status', ''):12s} {task.get('name', '')}")


@click.group("queue")
def queue_group() -> None:
    """Create and list queues."""


@queue_group.command("create")
@click.argument("name")
@pass_state
def queue_create(state: CliState, name) -> None:
    click.echo(state.api.call("queues.create", {"name": name})["id"])


@queue_group.command("list")
@pass_state
def queue_list(state: CliState) -> None:
    for queue in state.api.call("queues.get_all", {"order_by": ["name"]})["queues"]:
        tags = " (default)" if "default" in (queue.get("system_tags") or []) else ""
        click.echo(f"{queue['id']}  {queue['name']}{tags}  {len(queue.get('entries') or [])} waiting")
