"""Agent commands: daemon, execute, build, list, config. Thin: parse, load settings, call.

The daemon's process options live here too: --detached/--stop/--force (agent.daemon.detach
does the work) and --metrics-port (an agent.daemon.metrics.AgentMetrics, made here and handed
to the Daemon, served on /metrics while it runs).
"""
from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shipyard.cli.state import CliState, pass_state, state_of
from shipyard.errors import ConfigError
from shipyard.logs import basic_config, console_logger
from shipyard.signals import Shutdown

if TYPE_CHECKING:
    from agent.daemon.metrics import AgentMetrics


def _echo(line: str) -> None:
    """A console line: printed, or a record of the shipyard.console logger under --log-format json."""
    json_log = console_logger()
    if json_log is not None:
        json_log.info(line)
    else:
        click.echo(line)


@click.command("daemon")
@click.option("--detached", is_flag=True, help="Run in the background; the pid file and log "
              "are under the work dir, named after the worker id.")
@click.option("--stop", is_flag=True, help="Stop this worker id's detached daemon: it drains "
              "(the running task finishes, nothing new is taken).")
@click.option("--force", is_flag=True, help="With --stop: also abort the running task.")
@click.option("--pid-file", type=click.Path(path_type=Path, dir_okay=False), hidden=True)
@click.option("--metrics-port", metavar="[HOST:]PORT",
              help="Serve Prometheus metrics on this port (all interfaces unless HOST).")
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
def daemon_cmd(ctx, detached, stop, force, pid_file, metrics_port, queues, more_queues, order_fairness, foreground,
               create_queue, max_tasks, services, gpus, cpu_only, docker, task_user, verbose) -> None:
    """Pull tasks from queues and run them, one at a time."""
    from agent.daemon.detach import PidFile
    from agent.daemon.loop import Daemon
    from agent.daemon.slots import slot_setup
    from agent.execution.task_user import startup_check

    state = state_of(ctx)
    if _control_detached(ctx, state, detached=detached, stop=stop, force=force):
        return
    with PidFile(pid_file) if pid_file is not None else nullcontext(), _serving(state, metrics_port) as metrics:
        basic_config(verbose)
        settings = state.settings_with(**_docker_overrides(docker), **{"agent.task_user": task_user})
        startup_check(settings)
        names = list(queues) + list(more_queues) or list(settings.agent.queues)
        if settings.agent.docker.enabled:
            from agent.execution.docker import start_docker_mode

            start_docker_mode(settings, log=_echo)
        shutdown = Shutdown().install()
        shutdown.on_signal(lambda count: None)
        setup = slot_setup(state.api, names, gpus=gpus, cpu_only=cpu_only, services=services,
                           order_fairness=order_fairness, margin_mb=settings.agent.gpu_pack_margin_mb)
        Daemon(state.api, settings, setup.queue_names, shutdown=shutdown, order_fairness=order_fairness,
               create_queue=create_queue, echo=_echo, max_tasks=max_tasks, make_slots=setup.make_pool,
               stats_extra=setup.gpu_stats, exact_order=setup.exact_order, metrics=metrics,
               gpu_inventory=setup.inventory).work()


def _control_detached(ctx: click.Context, state: CliState, *, detached: bool, stop: bool, force: bool) -> bool:
    """--stop [--force] and --detached; True when one of them was the whole command."""
    from agent.daemon.detach import DaemonFiles, start_detached, stop_daemon

    if force and not stop:
        raise click.UsageError("--force goes with --stop")
    if stop:
        stop_daemon(DaemonFiles.of(state.settings), force=force, echo=click.echo)
        return True
    if detached:
        code, report = start_detached(DaemonFiles.of(state.settings), sys.argv[1:])
        click.echo(report, err=code != 0)
        ctx.exit(code)
    return False


@contextmanager
def _serving(state: CliState, address: str | None) -> Iterator[AgentMetrics | None]:
    """--metrics-port: the daemon's metrics, on /metrics for as long as it runs; None without it."""
    if address is None:
        yield None
        return
    from agent.daemon.metrics import AgentMetrics, MetricsServer, parse_address

    try:
        host, port = parse_address(address)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--metrics-port") from None
    metrics = AgentMetrics(state.settings.agent.worker_id, spool_dir=state.settings.agent.work_dir / "spool")
    try:
        server = MetricsServer(metrics, host, port).start()
    except OSError as exc:
        raise click.BadParameter(f"cannot listen on {host}:{port}: {exc}", param_hint="--metrics-port") from None
    try:
        yield metrics
    finally:
        server.close()


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
@click.option("--attempt", type=int, default=None, help="Run as this claim of the task (a glue job: "
              "`shipyard slurm` claimed it, this process's key is the task's own, a signal hands it back "
              "unless the task was asked to stop).")
@click.option("--verbose", is_flag=True)
@click.pass_context
def execute_cmd(ctx, task_id, attempt, verbose) -> None:
    """Build and run one task in the foreground; exit with its outcome."""
    from agent.execution.task_user import startup_check

    basic_config(verbose)
    state = state_of(ctx)
    startup_check(state.settings)
    shutdown = Shutdown().install()
    api = state.api
    if attempt is None:
        from agent.execution.runner import TaskRun

        api.call("tasks.started", {"task": task_id, "force": True, "status_message": "shipyard execute"})
        outcome = TaskRun(api, state.settings, task_id, should_abort=lambda: shutdown.requested, echo=_echo).run()
    else:
        outcome = _execute_claimed(state, task_id, attempt, shutdown)
    ctx.exit(0 if outcome.status == "completed" else (outcome.exit_code or 1))


def _execute_claimed(state: CliState, task_id: str, attempt: int, shutdown: Shutdown):
    """`execute --attempt N`: the glue's claim, reported as that attempt (fenced), with the key it minted."""
    from agent.glue.node_start import STARTED_MESSAGE, begin

    settings, api = state.settings, state.api
    begun = begin(api, task_id, attempt, STARTED_MESSAGE)   # its round trips overlap the run's imports

    from agent.glue.node import ClaimedRun, HeldKey, SignalVerdict

    run = ClaimedRun(api, settings, task_id, verdict=SignalVerdict(api, task_id, lambda: shutdown.requested),
                     echo=_echo, attempt=attempt, begun=begun,
                     task_keys=HeldKey(settings.api.access_key, settings.api.secret_key))
    run.should_abort = run._judged
    return run.run()


@click.command("build")
@click.option("--id", "task_id", required=True, help="The task whose environment to build.")
@click.option("--target", type=click.Path(path_type=Path, file_okay=False), required=True)
@pass_state
def build_cmd(state: CliState, task_id, target) -> None:
    """Rebuild a task's code and Python environment into TARGET, without running it."""
    from agent.execution.runner import TaskRun

    built = TaskRun(state.api, state.settings, task_id, echo=_echo).build_only(target.resolve())
    click.echo(f"code:   {built.workspace.root}\nentry:  {built.workspace.entry_point}\n"
               f"python: {built.env.python}")


@click.command("list")
@pass_state
def list_cmd(state: CliState) -> None:
    """Workers the server sees."""
    workers = state.api.call("workers.get_all")["workers"]
    for worker in workers:
        task = (worker.get("task") or {}).get("id") or "-"
        queues = ",".join(q.get("name", q.get("id", "")) for q in worker.get("queues") or [])
        click.echo(f"{worker['id']:30s} queues={queues or '-':20s} task={task}{_gpu_notes(worker)}")
    if not workers:
        click.echo("no workers")


def _gpu_notes(worker: dict) -> str:
    """GPU leases and GPUs the daemon stepped aside from (its system_tags, agent/gpus/sharing.py)."""
    import time

    notes = []
    for tag in worker.get("system_tags") or []:
        parts = str(tag).split(":")
        if parts[0] == "gpu-leased" and len(parts) == 4 and parts[3].isdigit():
            until = time.strftime("%H:%M", time.localtime(int(parts[3])))
            notes.append(f"gpu {parts[1]} leased by {parts[2]} until {until}")
        elif parts[0] == "gpu-foreign" and len(parts) == 2:
            notes.append(f"gpu {parts[1]} in use outside shipyard")
    return ("  " + "; ".join(notes)) if notes else ""


@click.command("config")
@pass_state
def config_cmd(state: CliState) -> None:
    """The effective settings and where each came from (secrets masked)."""
    settings = state.settings
    click.echo(f"# config file: {settings.config_file or '(none)'}")
    for key, value, source in settings.describe():
        click.echo(f"{key} = {value!r}    # {source}")
    for warning in settings.warnings:
        click.echo(f"# warning: {warning}")

