"""A real single-machine Slurm cluster for tests: munged, slurmctld and slurmd from Debian's
packages, with a generated slurm.conf in a temporary directory (no system files touched).

    cluster = SlurmCluster.start(tmp_dir, gpus=1)   # skips the test when Slurm is absent or not root
    cluster.env                                    # SLURM_CONF (+ PATH) for sbatch/squeue/scancel
    cluster.stop()

The lines that matter (issue 22): the controller and the node on 127.0.0.1 (no DNS), munge on
its own socket and key, an empty plugstack (else the package's system one is read), no MPI, no
cgroups (proctrack/linuxproc, task/none), cons_tres with a `gpu` GRES whose File= entries are
placeholder files, an immediate batch scheduler, and job history in a jobcomp text file.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SBIN = ("munged", "slurmctld", "slurmd")


def available() -> str | None:
    """Why a cluster cannot start here, or None."""
    if os.geteuid() != 0:
        return "Slurm's slurmd must run as root"
    missing = [b for b in (*SBIN, "sbatch", "squeue", "mungekey") if shutil.which(b) is None
               and not Path("/usr/sbin", b).exists()]
    if missing:
        return f"Slurm/munge not installed (missing {', '.join(missing)}; scripts/start-slurm.sh installs them)"
    return None


def _free_port_pair() -> tuple[int, int]:
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = tuple(s.getsockname()[1] for s in socks)
    for s in socks:
        s.close()
    return ports[0], ports[1]


def _conf(root: Path, host: str, cpus: int, memory_mb: int, gpus: int, ctld_port: int, node_port: int) -> str:
    gres = f" Gres=gpu:{gpus}" if gpus else ""
    return "\n".join([
        "ClusterName=shipyardtest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={node_port}",
        "SlurmUser=root", "SlurmdUser=root",
        f"AuthInfo=socket={root}/munge/munge.socket",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool/%n",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        f"PlugStackConfig={root}/plugstack.conf",
        "MpiDefault=none", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "GresTypes=gpu" if gpus else "",
        "SchedulerParameters=batch_sched_delay=0", "SchedulerType=sched/backfill",
        "JobCompType=jobcomp/filetxt", f"JobCompLoc={root}/jobcomp.txt",
        "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=1",
        "JobAcctGatherParams=OverMemoryKill",
        "AccountingStorageType=accounting_storage/none",
        "ReturnToService=2", "DefMemPerCPU=100", "KillWait=5", "MinJobAge=30", "MessageTimeout=5", "InactiveLimit=0",
        "SlurmctldTimeout=10", "SlurmdTimeout=30",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb}{gres} State=UNKNOWN",
        f"PartitionName=batch Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName=other Nodes={host} MaxTime=INFINITE State=UP",
        f"PartitionName=hold Nodes={host} MaxTime=INFINITE State=DOWN",   # accepts jobs, starts none (benches)
        "",
    ])


@dataclass
class SlurmCluster:
    root: Path
    host: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    @classmethod
    def start(cls, root: Path, *, gpus: int = 1, cpus: int | None = None, memory_mb: int = 2048) -> SlurmCluster:
        why = available()
        if why is not None:
            pytest.skip(why)
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        host = socket.gethostname().split(".")[0]
        cluster = cls(root, host)
        for sub in ("munge", "state", f"spool/{host}", "dev", "out"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "out", 0o1777)
        (root / "plugstack.conf").write_text("")
        files = []
        for i in range(gpus):
            (root / "dev" / f"gpu{i}").write_text("")
            files.append(f"Name=gpu File={root}/dev/gpu{i}")
        (root / "gres.conf").write_text("\n".join(files) + "\n")
        ctld_port, node_port = _free_port_pair()
        cpus = cpus or max(os.cpu_count() or 1, 2)
        cluster.conf.write_text(_conf(root, host, cpus, memory_mb, gpus, ctld_port, node_port))
        cluster._start_daemons()
        return cluster

    def _sbin(self, name: str) -> str:
        return shutil.which(name) or f"/usr/sbin/{name}"

    def _start_daemons(self) -> None:
        munge = self.root / "munge"
        (munge / "munge.key").unlink(missing_ok=True)
        subprocess.run([self._sbin("mungekey"), "--create", f"--keyfile={munge}/munge.key"], check=True,
                       capture_output=True)
        os.chmod(munge / "munge.key", 0o400)
        self._spawn([self._sbin("munged"), "--foreground", "--force", f"--socket={munge}/munge.socket",
                     f"--key-file={munge}/munge.key", f"--pid-file={munge}/munged.pid",
                     f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"])
        _wait_for(lambda: (munge / "munge.socket").exists(), 10, "munged did not create its socket")
        self._spawn([self._sbin("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn([self._sbin("slurmd"), "-D", "-f", str(self.conf)])
        _wait_for(self._node_idle, 30, f"the Slurm node never became idle; see {self.root}/slurmd.log")

    def _spawn(self, argv: list[str]) -> None:
        env = {**os.environ, **self.env}
        self.procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True))

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=check, timeout=30)

    def _node_idle(self) -> bool:
        done = self.run("sinfo", "-h", "-o", "%T", check=False)
        return done.returncode == 0 and "idle" in done.stdout

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-n", self.host, "-o", "%T").stdout.strip()

    def stop(self) -> None:
        self.run("scancel", "--full", "--user=root", check=False)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


def _wait_for(check, timeout_s: float, why: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(why)
