"""Kubernetes engine overhead: submits per second through the real client, against a bare client loop.

No cluster runs here, so the API server is tests/k8s_apiserver.py on loopback: the figure is the
glue's own cost per task (template merge, allow-list, the Job and its Secret, two HTTP POSTs)
next to a bare loop that POSTs prebuilt Jobs with the same client (one POST each), and the time of
one `statuses()` round (two list calls) over all those jobs with a pod each.

    python -m bench.bench_k8s_engine [--tasks 1000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.glue.engine import JobRequest  # noqa: E402
from agent.glue.k8s import REQUEST_TIMEOUT, KubernetesEngine  # noqa: E402
from agent.glue.k8s_pod import PodSettings, build_job, to_manifest  # noqa: E402
from tests.helpers import free_ports  # noqa: E402
from tests.k8s_apiserver import ApiServer, write_kubeconfig  # noqa: E402

TEMPLATE = {"spec": {"nodeSelector": {"gpu": "a100"}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                     "containers": [{"name": "task", "image": "shipyard:0.1.0",
                                     "resources": {"requests": {"cpu": "1", "memory": "4Gi"}}}]}}


def _requests(count: int, prefix: str) -> list[JobRequest]:
    return [JobRequest(task_id=f"{prefix}{i:031x}", queue="gpu", command=("shipyard", "execute", "--id", str(i)),
                       gpus=1, env={"CLEARML_API_HOST": "http://srv:8008", "CLEARML_API_ACCESS_KEY": "K",
                                    "CLEARML_API_SECRET_KEY": "S"}, attempt=1, options=("--shm-size", "8g"))
            for i in range(count)]


def _pods(server: ApiServer) -> None:
    """A running pod for every job, as the Job controller and kubelet would leave them."""
    pods = server.objects["/api/v1/namespaces/ml/pods"]
    for name, job in server.objects["/apis/batch/v1/namespaces/ml/jobs"].items():
        meta = {**job["spec"]["template"]["metadata"], "name": f"{name}-p", "namespace": "ml",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                     "uid": job["metadata"]["uid"]}]}
        pods[f"{name}-p"] = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": job["spec"]["template"]["spec"],
                             "status": {"phase": "Running"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per loop, split over the rounds")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    (port,) = free_ports(1)
    server = ApiServer(port)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = write_kubeconfig(Path(tmp) / "kubeconfig", port)
        settings = PodSettings(template=TEMPLATE)
        engine = KubernetesEngine.connect("ml", settings, kubeconfig=kubeconfig)

    # Alternating rounds, medians: the machine is shared, and a burst of other work should hit both loops.
    bare_rates, glue_rates = [], []
    per_round = args.tasks // args.rounds
    for n in range(args.rounds):
        bare_jobs = [build_job(r, settings) for r in _requests(per_round, f"b{n}")]
        started = time.perf_counter()
        for job in bare_jobs:
            engine._batch.create_namespaced_job("ml", job, _request_timeout=REQUEST_TIMEOUT)
        bare_rates.append(per_round / (time.perf_counter() - started))
        requests = _requests(per_round, f"e{n}")
        started = time.perf_counter()
        for request in requests:
            engine.submit(request)
        glue_rates.append(per_round / (time.perf_counter() - started))
    bare, glue = statistics.median(bare_rates), statistics.median(glue_rates)
    started = time.perf_counter()
    for request in requests[:200]:
        to_manifest(build_job(request, settings))
    build_ms = (time.perf_counter() - started) / min(200, len(requests)) * 1000

    _pods(server)
    started = time.perf_counter()
    statuses = engine.statuses()
    round_s = time.perf_counter() - started
    server.shutdown()
    print(f"tasks: {args.tasks} per loop in {args.rounds} alternating rounds, medians  (loopback API server, "
          "one client, sequential)")
    print(f"bare client, prebuilt Job, 1 POST each:   {bare:8.1f} jobs/s")
    print(f"engine.submit, Job + Secret, 2 POSTs each: {glue:8.1f} tasks/s  ({glue / bare:.2f}x bare)")
    print(f"build_job + serialize alone:               {build_ms:8.2f} ms/task")
    print(f"statuses() over {len(statuses)} jobs + pods:       {round_s:8.2f} s per round "
          f"({round_s / len(statuses) * 1000:.2f} ms per job)")


if __name__ == "__main__":
    main()
