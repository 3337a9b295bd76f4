"""GPU check for a machine with NVIDIA GPUs: what NVML sees, and what each task can see.

    python bench/gpu_check.py [--hold 8] [--fake-gpus N]

1. Prints the GPUs (and MIG instances) NVML reports, and one stats sample.
2. Starts a Shipyard server and `shipyard daemon --gpus 0-<n-1> --queue single=1 cpu=0
   [dual=2]`, enqueues tasks and proves from inside each one what it sees:
   CUDA_VISIBLE_DEVICES, CUDA's own device list (driver API through ctypes: count and PCI
   bus ids, which honour CUDA_VISIBLE_DEVICES), torch.cuda.device_count() when torch imports
   in this interpreter, and `nvidia-smi -L` (which ignores CUDA_VISIBLE_DEVICES: outside
   docker it lists every GPU of the host, so it is printed but never used as proof).
   - one GPU: two single-GPU tasks get the same GPU in turn (they must not overlap in
     time), and a task from the `cpu=0` queue is denied the GPU (CUDA sees none);
   - two or more: up to four single tasks run at once, each on a different GPU, a `dual=2`
     task sees two, and the `cpu=0` task sees none.
3. Starts `shipyard daemon --cpu-only --queue cpu`: its task sees no GPU.

On a machine without GPUs it says that NVML sees none and runs step 3 only; `--fake-gpus N`
runs step 2 against N fake GPUs (SHIPYARD_FAKE_GPUS, a test hook) and checks only
CUDA_VISIBLE_DEVICES. Exit status: 0 all checks passed, 1 a check failed, 2 the daemon
refused the GPU flags (`--gpus`/`--cpu-only` not wired yet).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.gpus.inventory import Gpu, NvmlInventory  # noqa: E402
from tests.agent_helpers import agent_env, create_task, start_daemon, task_log, wait_status  # noqa: E402
from tests.helpers import Api, ServerProcess, start_server  # noqa: E402

MARK = "GPU-CHECK "
PROBE = r'''
import ctypes, json, os, shutil, subprocess, time
started = time.time()
seen = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES")}
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    rc = cuda.cuInit(0)
    if rc == 100:                       # CUDA_ERROR_NO_DEVICE: every GPU hidden
        seen["cuda"] = []
    elif rc:
        seen["cuda_error"] = f"cuInit returned {rc}"
    else:
        count, devices = ctypes.c_int(), []
        cuda.cuDeviceGetCount(ctypes.byref(count))
        for i in range(count.value):
            dev, name, bus = ctypes.c_int(), ctypes.create_string_buffer(256), ctypes.create_string_buffer(64)
            cuda.cuDeviceGet(ctypes.byref(dev), i)
            cuda.cuDeviceGetName(name, 256, dev)
            cuda.cuDeviceGetPCIBusId(bus, 64, dev)
            devices.append({"name": name.value.decode(), "pci_bus_id": bus.value.decode()})
        seen["cuda"] = devices
except OSError as exc:
    seen["cuda_error"] = f"no CUDA driver: {exc}"
torch = subprocess.run([HOST_PYTHON, "-c", "import torch; print(torch.cuda.device_count())"],
                       capture_output=True, text=True)
seen["torch"] = int(torch.stdout) if torch.returncode == 0 else (torch.stderr.strip().splitlines() or ["?"])[-1]
if shutil.which("nvidia-smi"):
    seen["nvidia_smi_L"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.split("\n")
time.sleep(HOLD)
seen["start"], seen["end"] = started, time.time()
print("GPU-CHECK " + json.dumps(seen), flush=True)
'''


@dataclass
class Probe:
    name: str
    queue: str
    expect_devices: int
    task: str = ""
    seen: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def visible(self) -> list[str]:
        value = self.seen.get("CUDA_VISIBLE_DEVICES")
        return [] if not value else value.split(",")

    def overlaps(self, other: Probe) -> bool:
        return bool(self.seen["start"] < other.seen["end"] and other.seen["start"] < self.seen["end"])


def show_nvml() -> list[Gpu]:
    inventory = NvmlInventory()
    gpus = inventory.devices()
    if not gpus:
        print(f"NVML sees no GPU ({inventory.unavailable_reason or 'no device reported'})")
        return []
    print(f"NVML sees {len(gpus)} GPU(s):")
    for g in gpus:
        print(f"  GPU {g.index}: {g.name}  {g.uuid}  bus {g.pci_bus_id}  {g.memory_used_mb}/{g.memory_total_mb} MiB"
              f"  {g.utilization_pct:.0f}%  {g.temperature_c:.0f}C")
        for m in g.mig:
            print(f"    MIG {g.index}:{m.index}: {m.name}  {m.uuid}  {m.memory_total_mb} MiB")
    print(f"  stats sample: {inventory.stats([g.index for g in gpus])}")
    if shutil.which("nvidia-smi"):
        print("nvidia-smi -L:\n  " + subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
              .stdout.strip().replace("\n", "\n  "))
    inventory.close()
    return gpus


def run_probes(server: ServerProcess, root: Path, daemon_args: list[str], queues: list[str], probes: list[Probe],
               hold: float, **env: str) -> bool:
    """Start a daemon, run the probes, collect what each saw; False if the daemon refused its flags."""
    print(f"\n$ shipyard daemon {' '.join(daemon_args)} --queue {' '.join(queues)}")
    try:
        daemon = start_daemon(agent_env(server, root, **env), queues, root / "daemon.log", *daemon_args)
    except RuntimeError as exc:
        print("  the daemon did not start:\n    " + str(exc).strip().replace("\n", "\n    ")[-1500:])
        return False
    api: Api = server.api()
    code = PROBE.replace("HOST_PYTHON", repr(sys.executable)).replace("HOLD", repr(hold))
    try:
        for probe in probes:
            probe.task = create_task(api, probe.name, {"repository": "", "entry_point": "probe.py", "diff": code},
                                     queue=probe.queue)
        for probe in probes:
            doc = wait_status(api, probe.task, timeout=900)
            lines = task_log(api, probe.task)
            found = [line[len(MARK):] for line in lines if line.startswith(MARK)]
            if doc["status"] != "completed" or not found:
                probe.problems.append(f"task ended {doc['status']} ({doc.get('status_reason')}); log tail: "
                                      + " | ".join(lines[-8:]))
                continue
            probe.seen = json.loads(found[-1])
    finally:
        daemon.stop()
    return True


def check(probes: list[Probe], gpus: list[Gpu], fake: bool) -> None:
    buses = {g.pci_bus_id.upper()[-7:] for g in gpus}
    done = [p for p in probes if p.seen]
    for p in done:
        _check_environment(p)
        if not fake:
            _check_cuda_view(p, buses)
    for i, a in enumerate(done):
        for b in done[i + 1:]:
            _check_pair(a, b, fake)


def _check_environment(p: Probe) -> None:
    """The variables the agent set for the task: as many devices as asked, in PCI order."""
    if len(p.visible) != p.expect_devices:
        p.problems.append(f"CUDA_VISIBLE_DEVICES={p.seen.get('CUDA_VISIBLE_DEVICES')!r}, "
                          f"expected {p.expect_devices} device(s)")
    if p.expect_devices == 0 and p.seen.get("NVIDIA_VISIBLE_DEVICES") != "none":
        p.problems.append(f"NVIDIA_VISIBLE_DEVICES={p.seen.get('NVIDIA_VISIBLE_DEVICES')!r}, expected 'none'")
    if p.seen.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        p.problems.append(f"CUDA_DEVICE_ORDER={p.seen.get('CUDA_DEVICE_ORDER')!r}")


def _check_cuda_view(p: Probe, buses: set[str]) -> None:
    """What CUDA and torch inside the task saw: the expected count, and only devices NVML lists."""
    cuda = p.seen.get("cuda")
    if cuda is None:
        p.problems.append(f"CUDA did not answer: {p.seen.get('cuda_error')}")
    elif len(cuda) != p.expect_devices:
        p.problems.append(f"CUDA sees {len(cuda)} device(s), expected {p.expect_devices}")
    elif any(d["pci_bus_id"].upper()[-7:] not in buses for d in cuda):
        p.problems.append(f"CUDA shows a device NVML does not list: {cuda}")
    if isinstance(p.seen.get("torch"), int) and p.seen["torch"] != p.expect_devices:
        p.problems.append(f"torch.cuda.device_count()={p.seen['torch']}, expected {p.expect_devices}")


def _check_pair(a: Probe, b: Probe, fake: bool) -> None:
    """Two tasks that ran at the same time must not share a GPU."""
    if a.overlaps(b) and set(a.visible) & set(b.visible):
        a.problems.append(f"ran at the same time as {b.name} on GPU(s) {set(a.visible) & set(b.visible)}")
    if not fake and a.overlaps(b) and a.seen.get("cuda") and b.seen.get("cuda"):
        shared = {d["pci_bus_id"] for d in a.seen["cuda"]} & {d["pci_bus_id"] for d in b.seen["cuda"]}
        if shared and not any(v.startswith("MIG-") for v in a.visible):   # MIG: one bus, many instances
            a.problems.append(f"shares PCI device(s) {shared} with {b.name} while both run")


def report(probes: list[Probe]) -> bool:
    t0 = min((p.seen["start"] for p in probes if p.seen), default=0.0)
    print("| task | queue | CUDA_VISIBLE_DEVICES | CUDA sees | torch | ran (s) | result |")
    print("|---|---|---|---|---|---|---|")
    for p in probes:
        cuda = p.seen.get("cuda")
        sees = (", ".join(f"{d['name']} @{d['pci_bus_id']}" for d in cuda) or "none") if cuda is not None \
            else p.seen.get("cuda_error", "-")
        ran = f"{p.seen['start'] - t0:.1f}-{p.seen['end'] - t0:.1f}" if p.seen else "-"
        print(f"| {p.name} | {p.queue} | {p.seen.get('CUDA_VISIBLE_DEVICES', '-')!r} | {sees} | "
              f"{p.seen.get('torch', '-')} | {ran} | {'ok' if not p.problems else '; '.join(p.problems)} |")
    smi = next((p.seen["nvidia_smi_L"] for p in probes if p.seen.get("nvidia_smi_L")), None)
    if smi:
        print("(nvidia-smi -L inside a task, which ignores CUDA_VISIBLE_DEVICES: "
              + " / ".join(filter(None, smi)) + ")")
    return all(not p.problems for p in probes)


def pinning_probes(units: int) -> list[Probe]:
    if units == 1:   # the same GPU in turn, and a task denied it
        return [Probe("single-a", "single", 1), Probe("single-b", "single", 1), Probe("denied", "cpu", 0)]
    probes = [Probe(f"single-{i}", "single", 1) for i in range(min(units, 4))]
    return probes + [Probe("denied", "cpu", 0), Probe("dual", "dual", 2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hold", type=float, default=8.0, help="seconds each task holds its GPUs")
    parser.add_argument("--fake-gpus", type=int, default=0, help="run the pinning step on N fake GPUs")
    args = parser.parse_args()
    gpus = show_nvml()
    fake = not gpus and args.fake_gpus > 0
    units = sum(len(g.mig) or 1 for g in gpus) if gpus else args.fake_gpus
    ok, refused = True, False
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # background bytecode writes may race the cleanup
        server = start_server(Path(tmp) / "server")
        try:
            if units:
                probes = pinning_probes(units)
                queues = ["single=1", "cpu=0"] + (["dual=2"] if units > 1 else [])
                gpu_arg = "all" if any(g.mig for g in gpus) else f"0-{units - 1}"
                env = {"SHIPYARD_FAKE_GPUS": str(args.fake_gpus)} if fake else {}
                if run_probes(server, Path(tmp) / "pinning", ["--gpus", gpu_arg], queues, probes, args.hold, **env):
                    check(probes, gpus, fake)
                    ok = report(probes) and ok
                else:
                    refused = True
            else:
                print("\nno GPU: the pinning step needs NVIDIA GPUs (or --fake-gpus N); running the CPU-only step")
            probes = [Probe("cpu-only", "cpu", 0)]
            if run_probes(server, Path(tmp) / "cpu-only", ["--cpu-only"], ["cpu"], probes, 0.0):
                check(probes, gpus, fake=not gpus)
                ok = report(probes) and ok
            else:
                refused = True
        finally:
            server.stop()
    print("\nresult: " + ("the daemon refused the GPU flags" if refused else "all checks passed" if ok else "FAILED"))
    return 2 if refused else 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
