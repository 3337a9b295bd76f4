"""`MemoryEngine`: an engine held in a dict, for the loop's table tests.

A test drives it by hand: `set_phase(job, Phase.RUNNING)`, `finish(job, Phase.FAILED,
"OUT_OF_MEMORY")`, `down = "slurmctld: connection refused"` (every call raises
`EngineUnavailable`), `allowed_options` (anything else is `JobRejected` naming the option),
`max_gpus`. `submitted` and `cancelled` record what the loop asked for.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, replace

from agent.glue.engine import EngineUnavailable, JobRejected, JobRequest, JobStatus, Phase


@dataclass
class MemoryJob:
    request: JobRequest
    status: JobStatus


class MemoryEngine:
    name = "memory"

    def __init__(self, *, allowed_options: tuple[str, ...] = (), max_gpus: int = 8):
        self.allowed_options = allowed_options
        self.max_gpus = max_gpus
        self.down: str | None = None
        self.jobs: dict[str, MemoryJob] = {}
        self.submitted: list[JobRequest] = []
        self.cancelled: list[tuple[str, float]] = []
        self._ids = itertools.count(100)
        self._lock = threading.Lock()

    def _reachable(self) -> None:
        if self.down is not None:
            raise EngineUnavailable(self.down)

    def check(self, request: JobRequest) -> None:
        for option in request.options:
            if option.split("=", 1)[0] not in self.allowed_options:
                raise JobRejected(f"engine option {option.split('=', 1)[0]!r} is not allowed "
                                  f"(setting shipyard.glue.allowed_options)")
        if request.gpus > self.max_gpus:
            raise JobRejected(f"{request.gpus} GPUs asked for (Shipyard/gpus), no node has more than {self.max_gpus}")

    def submit(self, request: JobRequest) -> str:
        self._reachable()
        with self._lock:
            job_id = str(next(self._ids))
            key = request.env.get("CLEARML_API_ACCESS_KEY", "")
            self.jobs[job_id] = MemoryJob(request, JobStatus(job_id, request.task_id, Phase.PENDING, "Priority",
                                                             attempt=request.attempt, key=key))
            self.submitted.append(request)
        return job_id

    def statuses(self) -> list[JobStatus]:
        self._reachable()
        with self._lock:
            return [job.status for job in self.jobs.values()]

    def cancel(self, job_id: str, grace_s: float) -> None:
        self._reachable()
        self.cancelled.append((job_id, grace_s))
        job = self.jobs[job_id]
        if not job.status.ended:
            self.finish(job_id, Phase.CANCELLED, "CANCELLED")

    # -- what a test does -----------------------------------------------------------------------
    def set_phase(self, job_id: str, phase: Phase, reason: str = "", exit_code: int | None = None) -> None:
        with self._lock:
            job = self.jobs[job_id]
            job.status = replace(job.status, phase=phase, reason=reason, exit_code=exit_code)

    finish = set_phase

    def job_of(self, task_id: str) -> str:
        return [job_id for job_id, job in self.jobs.items() if job.request.task_id == task_id][-1]

