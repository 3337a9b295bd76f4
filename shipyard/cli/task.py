"""`shipyard task ...` and `shipyard queue ...`: create, clone, enqueue, abort, show, follow logs;
`queue show` lists a queue's waiting tasks with whether a worker has their environment ready
(the workers' `prepared` reports, agent/daemon/prepare.py)."""
from __future__ import annotations

import ipaddress
import json
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import click

from agent.gpus.packing import usage_line
from shipyard.cli.state import CliState, pass_state
from shipyard.client.params import override_items
from shipyard.client.recorder import args_to_hyperparams, record_local_script, record_remote
from shipyard.errors import ConfigError, ServerError
from shipyard.protocol import WORKER_PREPARED, PrepareState, TaskStatus


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


def _server_is_here(api_server: str) -> bool:
    """The CLI reaches its server through loopback: the server (and `shipyard up`'s agent) run on
    this machine, so a repository that is a path here can be checked out."""
    host = urlsplit(api_server).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def _warn_local_repository(repository: str, api_server: str) -> None:
    """A repository that is a path on this machine runs only on a worker that sees the same path;
    said when the server is elsewhere (a server on this machine has its worker here too)."""
    from sandbox.repo_cache import is_local

    if repository and is_local(repository) and not _server_is_here(api_server):
        click.echo(f"warning: the task's repository is a path on this machine ({repository}); a worker on "
                   "another machine cannot check it out. Push it to a git server (git remote add origin URL "
                   "&& git push) and create the task from there, or run the worker on this machine.", err=True)


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
    api = state.api
    _warn_local_repository(section.get("repository") or "", api.api_server)
    if requirements:
        section["requirements"] = {"pip": requirements.read_text()}
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
@click.option("--name", help="The clone's name (default: \"<name> (Clone)\", as ClearML names clones).")
@click.option("--set", "overrides", multiple=True, help="Section/name=value (repeatable), e.g. Args/lr=0.1. "
              "The value must parse as the parameter's recorded type (int, float, bool, list, ...), "
              "and is stored with that type.")
@click.option("--queue", help="Enqueue the clone to this queue.")
@pass_state
def clone_cmd(state: CliState, task_id, name, overrides, queue) -> None:
    """Clone a task, change parameters, and optionally enqueue the clone."""
    api = state.api
    source = api.call("tasks.get_by_id", {"task": task_id})["task"]
    params = override_items(source.get("hyperparams") or {}, list(overrides))  # checked before anything is made
    new_id = api.call("tasks.clone", {"task": task_id,
                                      "new_task_name": name or f"{source.get('name') or task_id} (Clone)"})["id"]
    if params:
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
    # a running task stays in_progress until its agent stops it: say that it is stopping
    running = fields.get("status") in (None, TaskStatus.IN_PROGRESS)
    click.echo(f"{task_id}: {fields.get('status_message') if running else fields.get('status')}")


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
    memory = usage_line(task.get("runtime") or {})
    if memory:
        click.echo(f"{'gpu memory':12s} {memory}")
    for section, items in (task.get("hyperparams") or {}).items():
        for key, item in items.items():
            click.echo(f"{'param':12s} {section}/{key} = {item.get('value')}")
    for run in task.get("shipyard_attempts") or []:
        click.echo(f"{'run':12s} {_run_line(run)}")


def _run_line(run: dict) -> str:
    """One claim of the task by an agent, numbered from 1 as in its console's separators."""
    of = f" of {run['max_runs']}" if run.get("max_runs") else ""
    return f"{run.get('run', run.get('attempt'))}{of} on worker {run.get('worker')}: {run.get('end') or 'running'}"


def _print_events(events: list[dict]) -> None:
    for event in events:
        for line in str(event.get("msg", "")).split("\n"):
            click.echo(line)


FOLLOW_EXIT_CODES = {TaskStatus.FAILED: 1, TaskStatus.STOPPED: 2}
"""`task logs --follow`: how the task ended, as the exit code (0 otherwise: completed, published)."""
STILL_RUNNING = (TaskStatus.CREATED, TaskStatus.QUEUED, TaskStatus.IN_PROGRESS)

LOGS_EPILOG = """\b
Exit codes with --follow, for scripts and CI:
  0  the task completed (or was published)
  1  the task failed
  2  the task was stopped (aborted)
  3 and above: the console could not be read (3 server error, 4 credentials, 5 server unreachable)
Without --follow the command exits 0 once it printed the console."""


class _Console:
    """A task's console read in order: each call prints the lines not printed yet."""

    def __init__(self, api, task_id: str):
        self.api, self.task_id, self.seen = api, task_id, 0

    def print_new(self) -> None:
        data = self.api.call("events.get_task_events", {"task": self.task_id, "event_type": "log",
                                                        "order": "asc", "batch_size": 10000})
        events = data.get("events") or []
        _print_events(events[self.seen:])
        self.seen = max(self.seen, len(events))


@task_group.command("logs", epilog=LOGS_EPILOG)
@click.argument("task_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the task ends; exit 0 "
              "if it completed, 1 if it failed, 2 if it was stopped.")
@pass_state
def logs_cmd(state: CliState, task_id, follow) -> None:
    """Print a task's console."""
    console = _Console(state.api, task_id)
    console.print_new()
    if not follow:
        return
    while True:
        task = state.api.call("tasks.get_all", {"id": [task_id], "only_fields": ["status", "status_reason"]})
        if not task["tasks"]:
            raise ServerError(f"task {task_id} no longer exists", code=400, endpoint="tasks.get_all")
        status, reason = task["tasks"][0].get("status"), task["tasks"][0].get("status_reason")
        if status not in STILL_RUNNING:
            console.print_new()
            click.echo(f"-- task {status}" + (f": {reason}" if reason and status != TaskStatus.COMPLETED else ""))
            click.get_current_context().exit(FOLLOW_EXIT_CODES.get(status, 0))
        time.sleep(0.5)
        console.print_new()


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
    states = env_states(state.api.call("workers.get_all", {}).get("workers") or [])
    for queue in state.api.call("queues.get_all", {"order_by": ["name"]})["queues"]:
        tags = " (default)" if "default" in (queue.get("system_tags") or []) else ""
        waiting = [e["task"] for e in queue.get("entries") or []]
        ready = sum(1 for task in waiting if PrepareState.READY in states.get(task, {}).values())
        click.echo(f"{queue['id']}  {queue['name']}{tags}  {len(waiting)} waiting"
                   + (f" ({ready} env ready)" if ready else ""))


@queue_group.command("show")
@click.argument("queue")
@pass_state
def queue_show(state: CliState, queue) -> None:
    """The tasks waiting in QUEUE (name or id), in order, with their environment's state on the
    workers that prepare it ahead of pickup: `env ready on W`, `env building on W`, `env failed on W`."""
    import re
    body = {"id": [queue]} if re.match(r"^[a-f0-9]{32}$", queue) else {"name": f"^{re.escape(queue)}$"}
    rows = state.api.call("queues.get_all", body)["queues"]
    if not rows:
        raise click.ClickException(f"no queue {queue!r}")
    entries = rows[0].get("entries") or []
    ids = [e["task"] for e in entries]
    names = {t["id"]: t.get("name") or "" for t in (state.api.call(
        "tasks.get_all", {"id": ids, "only_fields": ["id", "name"]})["tasks"] if ids else [])}
    states = env_states(state.api.call("workers.get_all", {}).get("workers") or [])
    click.echo(f"{rows[0]['name']}: {len(entries)} waiting")
    for position, task in enumerate(ids, 1):
        click.echo(f"{position:>3}  {task}  {names.get(task, '')}  {env_label(states.get(task, {}))}")


def env_states(workers: list[dict]) -> dict[str, dict[str, str]]:
    """{task id: {worker: prepare state}} from the workers' reports."""
    found: dict[str, dict[str, str]] = {}
    for worker in workers:
        for task, prepared in (worker.get(WORKER_PREPARED) or {}).items():
            found.setdefault(task, {})[worker["id"]] = prepared
    return found


def env_label(by_worker: dict[str, str]) -> str:
    """`env ready on w1, w2`, else building, else failed; `-` when no worker looked at it."""
    for wanted in (PrepareState.READY, PrepareState.BUILDING, PrepareState.FAILED):
        workers = sorted(w for w, s in by_worker.items() if s == wanted)
        if workers:
            return f"env {wanted} on {', '.join(workers)}"
    return "-"
