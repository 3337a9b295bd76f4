"""`shipyard slurm`: queued tasks handed to Slurm as batch jobs. Thin: parse, build, run.

The glue talks to the server with the usual client settings (clearml.conf or CLEARML_API_*:
an `agent` key, so that it can mint each task's own key); Slurm is reached through sbatch,
squeue, scancel and sinfo on PATH (SLURM_CONF as usual). See docs/slurm.md.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import click

from shipyard.cli.state import CliState, pass_state
from shipyard.logs import basic_config
from shipyard.signals import Shutdown

HELP_EPILOG = """\b
Examples:
  shipyard slurm --queue gpu=1 --partition gpu --account ml --max-jobs 50
  shipyard slurm --queue cpu --queue gpu=2 --partition batch --allow-option --constraint --sbatch-option --qos=normal
"""


@click.command("slurm", epilog=HELP_EPILOG)
@click.option("--queue", "queues", multiple=True, required=True, envvar="SHIPYARD_SLURM_QUEUES",
              help="Queue to hand over, with its GPUs per task: gpu=1 (repeatable).")
@click.option("--partition", required=True, envvar="SHIPYARD_SLURM_PARTITION", help="Slurm partition (-p).")
@click.option("--account", default=None, envvar="SHIPYARD_SLURM_ACCOUNT", help="Slurm account (-A).")
@click.option("--max-jobs", type=click.IntRange(1), default=100, show_default=True,
              help="Most jobs this glue keeps in Slurm at once (pending + running).")
@click.option("--output-dir", type=click.Path(path_type=Path, file_okay=False), default="~/.shipyard/slurm",
              show_default=True, envvar="SHIPYARD_SLURM_OUTPUT_DIR",
              help="Slurm's output files; on a disk the nodes share.")
@click.option("--sbatch-option", "options", multiple=True, envvar="SHIPYARD_SLURM_OPTIONS",
              help="An sbatch option for every job, --name=value (repeatable; not checked).")
@click.option("--allow-option", "allowed", multiple=True, envvar="SHIPYARD_SLURM_ALLOWED_OPTIONS",
              help="An sbatch option tasks may add through Shipyard/engine_options (repeatable; replaces the "
                   "default list).")
@click.option("--cpus", type=click.IntRange(1), default=None, help="CPUs per job unless the task says (Shipyard/cpus).")
@click.option("--mem", "memory_mb", type=click.IntRange(1), default=None,
              help="Memory per job in MB unless the task says (Shipyard/memory_mb).")
@click.option("--node-command", default="shipyard", show_default=True, envvar="SHIPYARD_SLURM_NODE_COMMAND",
              help="How the node starts Shipyard (`<this> execute --id T`), e.g. '/opt/venv/bin/shipyard'.")
@click.option("--node-env", multiple=True, metavar="NAME=VALUE",
              help="A variable for every job, e.g. SHIPYARD_VENV_CACHE_DIR=/scratch/envs (repeatable).")
@click.option("--max-tasks", type=int, default=None, hidden=True)
@click.option("--watch-s", type=float, default=1.0, hidden=True)
@click.option("--verbose", is_flag=True)
@pass_state
def slurm_cmd(state: CliState, queues, partition, account, max_jobs, output_dir, options, allowed, cpus, memory_mb,
              node_command, node_env, max_tasks, watch_s, verbose) -> None:
    """Hand queued tasks to Slurm: each becomes an sbatch job running `shipyard execute`."""
    from agent.execution.taskkey import TaskKeys
    from agent.glue.loop import GlueLoop
    from agent.glue.request import GlueSettings, parse_queue
    from agent.glue.request import node_env as node_env_vars
    from agent.glue.slurm import DEFAULT_ALLOWED_OPTIONS, SlurmEngine, SlurmSettings

    basic_config(verbose)
    try:
        specs = tuple(parse_queue(q) for text in queues for q in text.split())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--queue") from None
    settings = state.settings
    agent, api = settings.agent, settings.api
    glue = GlueSettings(queues=specs, worker=f"{agent.worker_name}:slurm", max_jobs=max_jobs,
                        node_command=tuple(shlex.split(node_command)), node_env=node_env_vars(node_env),
                        cpus=cpus, memory_mb=memory_mb, max_runtime_s=agent.max_runtime_s,
                        queue_max_runtime_s=agent.queue_max_runtime_s, grace_s=agent.abort_grace_s,
                        lease_s=agent.lease_s, watch_s=watch_s)
    engine = SlurmEngine(SlurmSettings(partition=partition, account=account, output_dir=output_dir,
                                       options=tuple(options), allowed_options=tuple(allowed) or DEFAULT_ALLOWED_OPTIONS))
    server_env = {"CLEARML_API_HOST": api.api_server, "CLEARML_FILES_HOST": api.files_server,
                  "CLEARML_WEB_HOST": api.web_server, "SHIPYARD_LEASE_S": f"{agent.lease_s:g}",
                  "SHIPYARD_ABORT_GRACE_S": f"{agent.abort_grace_s:g}"}
    shutdown = Shutdown().install()
    keys = TaskKeys(state.api, (api.access_key, api.secret_key), ttl_s=agent.task_key_ttl_s)
    code = GlueLoop(state.api, engine, glue, stop=shutdown.event, server_env=server_env, task_keys=keys,
                    echo=click.echo, max_tasks=max_tasks).work()
    if code:
        raise SystemExit(code)
