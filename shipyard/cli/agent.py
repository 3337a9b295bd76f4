"""Agent commands: daemon, execute, build, list, config, up. Thin: parse, load settings, call."""
from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import click

from shipyard.client.api import ApiClient
from agent.daemon import metrics
from shipyard.client.config import Settings, load_settings
from agent.daemon.detach import daemon_control
from shipyard.cli import console_logger
from shipyard.errors import ConfigError
from shipyard.signals import Shutdown


def _settings(ctx: click.Context, **overrides) -> Settings:
    base = ctx.obj or {}
    merged = {**base.get("overrides", {}), **{k: v for k, v in overrides.items() if v not in (None, ())}}
    return load_settings(merged, config_file=base.get("config_file"))


def _api(settings: Settings) -> ApiClient:
    if not settings.api.access_key or not settings.api.secret_key:
        raise ConfigError("no API credentials: set api.credentials in clearml.conf or "
                          "CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY")
    return ApiClient.from_settings(settings)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)  # also under --log-format json


def _echo(line: str) -> None:
    metrics.console(line)
    json_log = console_logger()
    if json_log is not None:
        json_log.info(line)
    else:
        click.echo(line)


@click.command("daemon")
@daemon_control(_settings)
@metrics.metrics_option(_settings)
@click.option("--queue", "queues", multiple=True, help="Queue name or id, in priority order (repeatable; "
              "several names after one --queue also work).")
@click.argument("more_queues", nargs=-1)
@click.option("--order-fairness", is_flag=True, help="Round-robin between queues instead of strict priority.")
@click.option("--foreground", is_flag=True, help="Run in the foreground (the default; kept for ClearML compatibility).")
@click.option("--create-queue", is_flag=True, help="Create queues that do not exist.")
@click.option("--max-tasks", type=int, help="Exit after running this many tasks.")
@click.option("--services-mode", "services", type=int, default=None,
              help="Run up to N long-lived tasks at once (each in its own slot).")
@click.option("--gpus", default=None, help="GPUs this daemon manages: 0,1 / 0-3 / all. With queue specs "
              "like quad=4 dual=2 single=1 any=1-4 it runs several tasks at once on disjoint GPUs.")
@click.option("--cpu-only", is_flag=True, help="Hide every GPU from tasks.")
@click.option("--docker", "docker", is_flag=False, flag_value="", default=None, metavar="[IMAGE [ARGS]]",
              help="Run each task in its own container: the task's image, else IMAGE, else "
                   "agent.default_docker.image. Quote an image with arguments: --docker \"img --shm-size 2g\".")
@click.option("--task-user", default=None, metavar="NAME",
              help="Run tasks as this user (name or uid) instead of the agent's; needs an agent running as "
                   "root. The environment and git caches stay the agent's, read-only to tasks "
                   "(shipyard.task_user, SHIPYARD_TASK_USER).")
@click.option("--verbose", is_flag=True)
@click.pass_context
def daemon_cmd(ctx, queues, more_queues, order_fairness, foreground, create_queue, max_tasks, services,
               gpus, cpu_only, docker, task_user, verbose) -> None:
    """Pull tasks from queues and run them, one at a time."""
    from agent.daemon.loop import Daemon
    from agent.daemon.slots import slot_setup
    from agent.execution.task_user import startup_check

    _logging(verbose)
    settings = _settings(ctx, **_docker_overrides(docker), **{"agent.task_user": task_user})
    startup_check(settings)
    names = list(queues) + list(more_queues) or list(settings.agent.queues)
    if settings.agent.docker.enabled:
        from agent.execution.docker import start_docker_mode

        start_docker_mode(settings, log=_echo)
    shutdown = Shutdown().install()
    shutdown.on_signal(lambda count: None)
    with _api(settings) as api:
        setup = slot_setup(api, names, gpus=gpus, cpu_only=cpu_only, services=services,
                           order_fairness=order_fairness)
        Daemon(api, settings, setup.queue_names, shutdown=shutdown, order_fairness=order_fairness,
               create_queue=create_queue, echo=_echo, max_tasks=max_tasks, make_slots=setup.make_pool,
               stats_extra=setup.gpu_stats, exact_order=setup.exact_order).work()


def _docker_overrides(docker: str | None) -> dict:
    """--docker (no value), --docker IMAGE or --docker "IMAGE ARGS..." as setting overrides."""
    if docker is None:
        return {}
    words = shlex.split(docker)
    overrides: dict = {"agent.docker.enabled": True}
    if words:
        overrides.update({"agent.docker.default_image": words[0], "agent.docker.default_args": words[1:]})
    return overrides


@click.command("execute")
@click.option("--id", "task_id", required=True, help="The task to build and run.")
@click.option("--verbose", is_flag=True)
@click.pass_context
def execute_cmd(ctx, task_id, verbose) -> None:
    """Build and run one task in the foreground; exit with its outcome."""
    from agent.execution.runner import TaskRun

    from agent.execution.task_user import startup_check

    _logging(verbose)
    settings = _settings(ctx)
    startup_check(settings)
    shutdown = Shutdown().install()
    with _api(settings) as api:
        api.call("tasks.started", {"task": task_id, "force": True, "status_message": "shipyard execute"})
        outcome = TaskRun(api, settings, task_id, should_abort=lambda: shutdown.requested, echo=_echo).run()
    ctx.exit(0 if outcome.status == "completed" else (outcome.exit_code or 1))


@click.command("build")
@click.option("--id", "task_id", required=True, help="The task whose environment to build.")
@click.option("--target", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.pass_context
def build_cmd(ctx, task_id, target) -> None:
    """Rebuild a task's code and Python environment into TARGET, without running it."""
    from agent.execution.runner import TaskRun

    settings = _settings(ctx)
    with _api(settings) as api:
        built = TaskRun(api, settings, task_id, echo=_echo).build_only(target.resolve())
    click.echo(f"code:   {built.workspace.root}\nentry:  {built.workspace.entry_point}\n"
               f"python: {built.env.python}")


@click.command("list")
@click.pass_context
def list_cmd(ctx) -> None:
    """Workers the server sees."""
    with _api(_settings(ctx)) as api:
        workers = api.call("workers.get_all")["workers"]
    for worker in workers:
        task = (worker.get("task") or {}).get("id") or "-"
        queues = ",".join(q.get("name", q.get("id", "")) for q in worker.get("queues") or [])
        click.echo(f"{worker['id']:30s} queues={queues or '-':20s} task={task}")
    if not workers:
        click.echo("no workers")


@click.command("config")
@click.pass_context
def config_cmd(ctx) -> None:
    """The effective settings and where each came from (secrets masked)."""
    settings = _settings(ctx)
    click.echo(f"# config file: {settings.config_file or '(none)'}")
    for key, value, source in settings.describe():
        click.echo(f"{key} = {value!r}    # {source}")
    for warning in settings.warnings:
        click.echo(f"# warning: {warning}")


def register(cli: click.Group) -> None:
    from shipyard.cli.task import queue_group, task_group
    from shipyard.cli.up import up_cmd

    for command in (daemon_cmd, execute_cmd, build_cmd, list_cmd, config_cmd, up_cmd, task_group, queue_group):
        cli.add_command(command)
    from shipyard.cli.autoscaler import autoscaler_cmd
    cli.add_command(autoscaler_cmd)
    from shipyard.cli.scheduler import scheduler_group
    cli.add_command(scheduler_group)
    cli.params.append(click.Option(["--config-file"], type=click.Path(path_type=Path, dir_okay=False),
                                   expose_value=False, callback=_store_config_file, is_eager=True,
                                   help="clearml.conf to read (default: $CLEARML_CONFIG_FILE or ~/clearml.conf)."))


def _store_config_file(ctx: click.Context, _param, value) -> None:
    ctx.ensure_object(dict)
    ctx.obj["config_file"] = value
