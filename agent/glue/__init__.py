"""Cluster-engine glue: Shipyard's queues handed to Slurm or Kubernetes.

    engine    the interface: JobRequest, JobStatus, Phase, Engine, JobRejected, EngineUnavailable
    loop      GlueLoop: claim (long-poll, leases) -> build -> check -> mint the task's key -> submit
    follow    Follower: the engine's phases mapped back onto the tasks (pending reason, leases,
              aborts, ends the node could not report, infrastructure requeues)
    request   GlueSettings, queue GPU specs, a task document -> JobRequest
    slurm     SlurmEngine: sbatch / squeue / scancel / sinfo
    node      the node's side of `shipyard execute --attempt N` (the glue's key, signal verdicts)
    memory    MemoryEngine, for the loop's table tests
"""
