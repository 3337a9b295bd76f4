"""`shipyard k8s`: queued tasks handed to Kubernetes, one Job per task. Thin: parse, build, run.

The glue talks to the server with the usual client settings (clearml.conf or CLEARML_API_*: an
`agent` key, so that it can mint each task's own key) and to Kubernetes with the pod's service
account inside a cluster, else kubeconfig. See docs/kubernetes.md and deploy/kubernetes/.

The claim loop (agent/glue/loop.py, `GlueLoop`) and the request builder (agent/glue/request.py)
come from the shared glue; they are imported when the command runs.
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
  shipyard k8s --queue gpu=1 --namespace ml --template pod.yaml --max-pods 20
  shipyard k8s --queue cpu --namespace ml --image registry.example.com/shipyard:0.1.0 --allow-option --cpus
  shipyard k8s --queue gpu=8 --namespace ml --template pod.yaml --max-gpus-per-pod 8 --no-task-image
"""


def _pod_settings(template: Path | None, image: str | None, glue_name: str, allowed: tuple[str, ...],
                  no_task_image: bool, image_prefixes: tuple[str, ...], max_gpus: int | None, grace_s: float):
    from agent.glue.k8s_pod import DEFAULT_ALLOWED_OPTIONS, OPTION_NAMES, PodSettings, load_template

    unknown = [name for name in allowed if name not in OPTION_NAMES]
    if unknown:
        raise click.BadParameter(f"{unknown[0]} has no pod equivalent (known: "
                                 f"{', '.join(sorted(set(OPTION_NAMES.values())))})", param_hint="--allow-option")
    return PodSettings(template=load_template(template) if template else {}, image=image, glue=glue_name,
                       allowed_options=frozenset(OPTION_NAMES[n] for n in allowed) or DEFAULT_ALLOWED_OPTIONS,
                       allow_task_image=not no_task_image, image_prefixes=image_prefixes, max_gpus=max_gpus,
                       grace_s=int(grace_s))


@click.command("k8s", epilog=HELP_EPILOG)
@click.option("--queue", "queues", multiple=True, required=True, envvar="SHIPYARD_K8S_QUEUES",
              help="Queue to hand over, with its GPUs per task: gpu=1 (repeatable).")
@click.option("--namespace", required=True, envvar="SHIPYARD_K8S_NAMESPACE", help="Namespace the Jobs run in.")
@click.option("--template", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              envvar="SHIPYARD_K8S_TEMPLATE",
              help="Pod template (pod.yaml): image, resources, node selectors, tolerations, volumes, "
                   "service account. The glue sets the command, the task's resources and variables.")
@click.option("--image", default=None, envvar="SHIPYARD_K8S_IMAGE",
              help="Image for tasks whose template container and task name none.")
@click.option("--max-pods", "max_jobs", type=click.IntRange(1), default=20, show_default=True,
              help="Most Jobs this glue keeps in the cluster at once (pending + running).")
@click.option("--allow-option", "allowed", multiple=True, envvar="SHIPYARD_K8S_ALLOWED_OPTIONS",
              help="A Docker argument tasks may use, mapped onto the pod (repeatable; replaces the default "
                   "--env --workdir --shm-size; others: --cpus --memory --user).")
@click.option("--no-task-image", is_flag=True, help="Refuse tasks that name their own container image.")
@click.option("--image-prefix", "image_prefixes", multiple=True,
              help="A task's image must start with one of these (repeatable), e.g. registry.example.com/ml/.")
@click.option("--max-gpus-per-pod", "max_gpus", type=click.IntRange(0), default=None,
              help="GPUs of the largest node: a task asking more fails at once instead of pending for ever.")
@click.option("--glue-name", default="shipyard", show_default=True, envvar="SHIPYARD_K8S_GLUE_NAME",
              help="Label value marking this glue's Jobs (two glues in one namespace need two names).")
@click.option("--kubeconfig", default=None, envvar="KUBECONFIG", help="kubeconfig file (outside a cluster).")
@click.option("--context", default=None, help="kubeconfig context (default: the current one).")
@click.option("--cpus", type=click.IntRange(1), default=None, help="CPUs per pod unless the task says (Shipyard/cpus).")
@click.option("--mem", "memory_mb", type=click.IntRange(1), default=None,
              help="Memory per pod in MB unless the task says (Shipyard/memory_mb).")
@click.option("--node-command", default="shipyard", show_default=True, envvar="SHIPYARD_K8S_NODE_COMMAND",
              help="How the pod starts Shipyard (`<this> execute --id T`).")
@click.option("--node-env", multiple=True, metavar="NAME=VALUE", help="A variable for every pod (repeatable).")
@click.option("--max-tasks", type=int, default=None, hidden=True)
@click.option("--watch-s", type=float, default=2.0, hidden=True)
@click.option("--verbose", is_flag=True)
@pass_state
def k8s_cmd(state: CliState, queues, namespace, template, image, max_jobs, allowed, no_task_image, image_prefixes,
            max_gpus, glue_name, kubeconfig, context, cpus, memory_mb, node_command, node_env, max_tasks, watch_s,
            verbose) -> None:
    """Hand queued tasks to Kubernetes: each becomes a Job whose pod runs `shipyard execute`."""
    from agent.execution.taskkey import TaskKeys
    from agent.glue.k8s import KubernetesEngine

    basic_config(verbose)
    settings = state.settings
    agent, api = settings.agent, settings.api
    pods = _pod_settings(template, image, glue_name, allowed, no_task_image, image_prefixes, max_gpus,
                         agent.abort_grace_s)
    engine = KubernetesEngine.connect(namespace, pods, kubeconfig=kubeconfig, context=context)
    from agent.glue import loop
    from agent.glue import request as req

    try:
        specs = tuple(req.parse_queue(q) for text in queues for q in text.split())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--queue") from None
    glue = req.GlueSettings(queues=specs, worker=f"{agent.worker_name}:k8s", max_jobs=max_jobs,
                            node_command=tuple(shlex.split(node_command)), node_env=req.node_env(node_env),
                            cpus=cpus, memory_mb=memory_mb, max_runtime_s=agent.max_runtime_s,
                            queue_max_runtime_s=agent.queue_max_runtime_s, grace_s=agent.abort_grace_s,
                            lease_s=agent.lease_s, watch_s=watch_s)
    server_env = {"CLEARML_API_HOST": api.api_server, "CLEARML_FILES_HOST": api.files_server,
                  "CLEARML_WEB_HOST": api.web_server, "SHIPYARD_LEASE_S": f"{agent.lease_s:g}",
                  "SHIPYARD_ABORT_GRACE_S": f"{agent.abort_grace_s:g}"}
    shutdown = Shutdown().install()
    keys = TaskKeys(state.api, (api.access_key, api.secret_key), ttl_s=agent.task_key_ttl_s)
    code = loop.GlueLoop(state.api, engine, glue, stop=shutdown.event, server_env=server_env, task_keys=keys,
                         echo=click.echo, max_tasks=max_tasks).work()
    if code:
        raise SystemExit(code)
