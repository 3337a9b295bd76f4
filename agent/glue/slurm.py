"""`SlurmEngine`: the glue's jobs as Slurm batch jobs, over sbatch / squeue / scancel / sinfo.

    submit    a batch script (the server's address, the task's own key, GPU pinning, then
              `exec shipyard execute --id T --attempt N`) handed to `sbatch --parsable` on its
              standard input (no script file: the key never touches a disk, and a flood of jobs
              costs no file creations); job name `shipyard-<task id>`, comment
              `shipyard task=<id> attempt=<n> key=<access key>` (never the secret)
    statuses  `squeue -h -t all -O ...` filtered on that name and comment (restart-safe)
    cancel    pending: `scancel`; running: `scancel --batch --signal=TERM` (the task's own
              `shipyard execute` is the batch shell and stops its task as an abort), then after the
              grace a full `scancel`
    check     task options against the allow-list, GPUs against the partition's largest GRES

Slurm's states map onto `Phase` in `PHASES`; a job Slurm requeued itself (`scontrol requeue`, a
node lost with requeue allowed) is INFRA: the glue hands the claim back and cancels the old job,
so the task runs again as a new attempt through the lease rules, never twice under one.
GPU pinning: with GRES files that are placeholders Slurm sets no CUDA_VISIBLE_DEVICES, so the
script sets it from the job's allocation (`scontrol show job -d`: `GRES=gpu:2(IDX:0-1)`) when unset.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agent.glue.engine import JOB_PREFIX, EngineUnavailable, JobRejected, JobRequest, JobStatus, Phase

log = logging.getLogger("shipyard.agent.glue.slurm")

DEFAULT_ALLOWED_OPTIONS: tuple[str, ...] = ("--constraint", "--qos", "--exclusive", "--nice",
                                            "--tmp", "--licenses", "--mail-type", "--mail-user")
"""sbatch options a task may add (Shipyard/engine_options) unless the glue's setting says otherwise."""
_UNREACHABLE = ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
                "Zero Bytes were transmitted", "Could not establish a configuration source",
                "Communication connection failure")
PHASES: dict[str, Phase] = {
    "PENDING": Phase.PENDING, "CONFIGURING": Phase.PENDING, "RESV_DEL_HOLD": Phase.PENDING,
    "RUNNING": Phase.RUNNING, "COMPLETING": Phase.RUNNING, "SUSPENDED": Phase.RUNNING, "STOPPED": Phase.RUNNING,
    "SIGNALING": Phase.RUNNING, "STAGE_OUT": Phase.RUNNING, "RESIZING": Phase.RUNNING,
    "COMPLETED": Phase.SUCCEEDED,
    "FAILED": Phase.FAILED, "OUT_OF_MEMORY": Phase.FAILED, "TIMEOUT": Phase.FAILED, "DEADLINE": Phase.FAILED,
    "CANCELLED": Phase.CANCELLED,
    "NODE_FAIL": Phase.INFRA, "PREEMPTED": Phase.INFRA, "BOOT_FAIL": Phase.INFRA, "REQUEUED": Phase.INFRA,
    "REQUEUE_HOLD": Phase.INFRA, "REQUEUE_FED": Phase.INFRA, "SPECIAL_EXIT": Phase.INFRA, "REVOKED": Phase.INFRA,
}
_FIELDS = ("JobID", "Name", "State", "Reason", "Comment", "RestartCnt", "exit_code", "STDOUT")
_COMMENT = re.compile(r"^shipyard task=(?P<task>\S+) attempt=(?P<attempt>\d+|-) key=(?P<key>\S*)$")
_OVER_MEMORY = re.compile(
    r"^slurmstepd(?:-\S+)?: error: (?:.* exceeded (?:virtual )?memory limit \(|Exceeded job memory limit)", re.MULTILINE)
"""What slurmstepd writes into the job's output when OverMemoryKill ends it: its own line
(`StepId=5.batch exceeded memory limit (669794304 > 629145600), being killed`), written before the
kill, and the controller's notice (`Exceeded job memory limit`), which travels through slurmctld
and may arrive after the job is already listed as FAILED, or not at all."""
Runner = Callable[..., "subprocess.CompletedProcess[str]"]
"""`run(argv)`, or `run(argv, stdin_text)` for sbatch's script: the finished command."""


@dataclass(frozen=True)
class SlurmSettings:
    partition: str
    account: str | None = None
    output_dir: Path = Path("~/.shipyard/slurm")
    """Slurm's own output files (attached to a task that died before its log shipper started); must
    be on a disk the nodes share (sbatch -o into a missing directory fails the job silently, so the
    glue creates it)."""
    options: tuple[str, ...] = ()
    allowed_options: tuple[str, ...] = DEFAULT_ALLOWED_OPTIONS


def run_command(argv: Sequence[str], stdin_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), input=stdin_text, capture_output=True, text=True, timeout=60, check=False,
                          stdin=None if stdin_text is not None else subprocess.DEVNULL)


class SlurmEngine:
    name = "slurm"

    def __init__(self, settings: SlurmSettings, *, run: Runner = run_command):
        self.settings = settings
        self.run = run
        self.output_dir = settings.output_dir.expanduser()
        self._max_gpus: int | None = None
        self._output_ready = False
        self._reasons: dict[str, str] = {}

    # -- the Engine protocol ----------------------------------------------------------------
    def check(self, request: JobRequest) -> None:
        for word in request.options:
            name = word.split("=", 1)[0]
            if not name.startswith("-"):
                raise JobRejected(f"sbatch option {word!r} (Shipyard/engine_options): give options as --name=value")
            if name not in self.settings.allowed_options:
                raise JobRejected(f"sbatch option {name!r} (Shipyard/engine_options) is not allowed by the glue's "
                                  f"setting --allow-option (allowed: {', '.join(self.settings.allowed_options)})")
        if request.gpus:
            most = self.max_gpus()
            if request.gpus > most:
                raise JobRejected(f"{request.gpus} GPU(s) asked for (Shipyard/gpus or the queue's GPU spec), but no "
                                  f"node of partition {self.settings.partition!r} has more than {most}")

    def submit(self, request: JobRequest) -> str:
        if not self._output_ready:   # sbatch -o into a missing directory fails the job silently
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._output_ready = True
        done = self._sbatch(self.sbatch_args(request), batch_script(request))
        return done.stdout.strip().split(";")[0]

    def statuses(self) -> list[JobStatus]:
        fields = ",".join(f"{name}:|" for name in _FIELDS)
        done = self._call(["squeue", "-h", "-t", "all", "-u", _user(), "-O", fields])
        found = []
        for line in done.stdout.splitlines():
            status = parse_squeue_line(line)
            if status is not None:
                found.append(self._why_failed(status))
        return found

    def _why_failed(self, status: JobStatus) -> JobStatus:
        """Slurm's memory enforcement without cgroups (OverMemoryKill) ends a job FAILED, saying
        why only in its output file (`_OVER_MEMORY`): read once per job."""
        if status.phase != Phase.FAILED or status.reason != "NonZeroExitCode" or not status.output:
            return status
        if status.job_id not in self._reasons:
            try:
                with open(status.output, "rb") as out:
                    out.seek(max(0, out.seek(0, os.SEEK_END) - 16384))
                    tail = out.read().decode(errors="replace")
            except OSError:
                tail = ""
            self._reasons[status.job_id] = "OUT_OF_MEMORY" if _OVER_MEMORY.search(tail) else ""
        reason = self._reasons[status.job_id]
        return replace(status, reason=reason) if reason else status

    def cancel(self, job_id: str, grace_s: float) -> None:
        state = self._call(["squeue", "-h", "-j", job_id, "-o", "%T"]).stdout.strip()
        if state not in ("RUNNING", "COMPLETING", "SUSPENDED") or grace_s <= 0:
            self._call(["scancel", job_id], quiet=True)
            return
        self._call(["scancel", "--batch", "--signal=TERM", job_id], quiet=True)
        timer = threading.Timer(grace_s, self._call, args=(["scancel", job_id],), kwargs={"quiet": True})
        timer.daemon = True
        timer.start()

    # -- sbatch ---------------------------------------------------------------------------------
    def sbatch_args(self, request: JobRequest) -> list[str]:
        key = request.env.get("CLEARML_API_ACCESS_KEY", "")
        attempt = "-" if request.attempt is None else str(request.attempt)
        args = ["sbatch", "--parsable", f"--job-name={request.name}",
                f"--comment=shipyard task={request.task_id} attempt={attempt} key={key}",
                f"--partition={self.settings.partition}", f"--output={self.output_path(request)}",
                "--open-mode=append"]
        if self.settings.account:
            args.append(f"--account={self.settings.account}")
        if request.gpus:
            args.append(f"--gres=gpu:{request.gpus}")
        if request.cpus:
            args.append(f"--cpus-per-task={request.cpus}")
        if request.memory_mb:
            args.append(f"--mem={request.memory_mb}M")
        if request.time_limit_s:
            args.append(f"--time={max(1, math.ceil(request.time_limit_s / 60))}")
        return [*args, *self.settings.options, *request.options]

    def output_path(self, request: JobRequest) -> Path:
        attempt = "" if request.attempt is None else f"-a{request.attempt}"
        return self.output_dir / f"{request.name}{attempt}.out"

    def _sbatch(self, argv: list[str], script: str) -> subprocess.CompletedProcess[str]:
        done = self._run(argv, script)
        if done.returncode != 0:
            error = (done.stderr or done.stdout).strip().replace("sbatch: error: ", "")
            if _unreachable(error):
                raise EngineUnavailable(f"sbatch: {error}")
            raise JobRejected(f"sbatch refused the job: {error}")
        return done

    # -- partition facts ------------------------------------------------------------------------
    def max_gpus(self) -> int:
        """The most GPUs any node of the partition has (sinfo's GRES column), asked once."""
        if self._max_gpus is None:
            text = self._call(["sinfo", "-h", "-p", self.settings.partition, "-o", "%G"]).stdout
            counts = [int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()\s]+)?:(\d+)", text)]
            self._max_gpus = max(counts, default=0)
        return self._max_gpus

    # -- commands -------------------------------------------------------------------------------
    def _run(self, argv: list[str], stdin_text: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return self.run(argv) if stdin_text is None else self.run(argv, stdin_text)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineUnavailable(f"{argv[0]}: {exc}") from None

    def _call(self, argv: list[str], *, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        done = self._run(argv)
        if done.returncode != 0:
            error = (done.stderr or done.stdout).strip()
            if _unreachable(error):
                raise EngineUnavailable(f"{argv[0]}: {error}")
            if not quiet:
                raise EngineUnavailable(f"{' '.join(argv[:2])} failed: {error}")
            log.info("%s: %s", " ".join(argv), error)
        return done


def parse_squeue_line(line: str) -> JobStatus | None:
    """One `squeue -O JobID:|,Name:|,...` line -> the job's status, or None when it is not ours."""
    parts = line.split("|")
    if len(parts) < len(_FIELDS):
        return None
    job_id, name, state, reason, comment, restarts, exit_code, output = (p.strip() for p in parts[:len(_FIELDS)])
    match = _COMMENT.match(comment)
    if not name.startswith(JOB_PREFIX) or match is None:
        return None
    state = state.split()[0].rstrip("+") if state else "PENDING"
    phase = PHASES.get(state, Phase.RUNNING)
    if phase == Phase.PENDING and restarts.isdigit() and int(restarts) > 0:
        phase, reason = Phase.INFRA, f"REQUEUED by Slurm (restart {restarts}; last reason {reason})"
    elif phase in (Phase.FAILED, Phase.INFRA, Phase.CANCELLED):
        reason = "NonZeroExitCode" if state == "FAILED" else state
    elif reason in ("None", "(null)"):
        reason = ""
    attempt = match.group("attempt")
    return JobStatus(job_id=job_id, task_id=match.group("task"), phase=phase, reason=reason,
                     exit_code=exit_status(exit_code),
                     attempt=None if attempt == "-" else int(attempt), key=match.group("key"), output=output)


def exit_status(field: str) -> int | None:
    """Slurm's exit code field -> the shell's exit code (128 + N for signal N), or None.

    squeue's `exit_code` is the batch shell's raw wait status (`768` for `exit 3`, `9` for a
    SIGKILL, `35072` for a shell that exited 137); sacct's `ExitCode` is `exit:signal` (`3:0`)."""
    if ":" in field:
        code, _, signum = field.partition(":")
        if not (code.isdigit() and signum.isdigit()):
            return None
        return 128 + int(signum) if int(signum) else int(code)
    if not field.isdigit():
        return None
    raw = int(field)
    return 128 + (raw & 0x7F) if raw & 0x7F else (raw >> 8) & 0xFF


_PIN = r"""if [ -n "${SLURM_JOB_ID:-}" ] && [ -z "${CUDA_VISIBLE_DEVICES:-}" ]; then
  idx=$(scontrol show job -d "$SLURM_JOB_ID" | sed -n 's/.*GRES=[^ ]*IDX:\([^)]*\)).*/\1/p' | head -n 1)
  pins=""
  IFS=, read -ra parts <<< "$idx"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then
      for ((i=${part%-*}; i<=${part#*-}; i++)); do pins="${pins:+$pins,}$i"; done
    elif [ -n "$part" ]; then pins="${pins:+$pins,}$part"; fi
  done
  export CUDA_VISIBLE_DEVICES="$pins"
fi
"""


def batch_script(request: JobRequest) -> str:
    """The job's script: its environment (the task's own key among it), GPU pinning, then the node
    command as the batch shell itself (so `scancel --batch` signals `shipyard execute`)."""
    lines = ["#!/bin/bash", f"# shipyard task {request.task_id}"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(request.env.items())]
    if request.gpus:
        lines.append(_PIN.rstrip("\n"))
    lines.append("exec " + shlex.join(request.command))
    return "\n".join(lines) + "\n"


def _unreachable(error: str) -> bool:
    return any(words.lower() in error.lower() for words in _UNREACHABLE)


def _user() -> str:
    import getpass

    return getpass.getuser()
