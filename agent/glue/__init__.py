"""Cluster-engine glue: Shipyard's queues handed to Slurm or Kubernetes (see engine.py)."""
