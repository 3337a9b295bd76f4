"""events.*: metric/log ingest and the read-back endpoints.

Importing this module registers every events.* endpoint. The code lives in:

    store     the `events` table's row format (log chunks, event types), shared helpers,
              delete_task_events
    ingest    events.add_batch / events.add: validation, lease fencing and dedup of
              re-sent log lines, storage, last_iteration/last_metrics
    read      task logs, raw events, download, deletion, and the request helpers every
              reader shares (target lookup, metric filters, scroll ids)
    metrics   scalar/vector histograms, single and latest values, plots, debug images
    compare   reads over several tasks: their metrics, their plots side by side
    samples   the single-sample viewers (get/next_debug_image_sample, get/next_plot_sample)
    raw       every point of a metric (scalar_metrics_iter_raw) and smaller reads
"""
from __future__ import annotations

from server.services.events import compare, ingest, metrics, raw, read, samples  # noqa: F401  (registers endpoints)
from server.services.events.store import (
    EVENT_TYPES,
    IMAGE,
    LOG,
    PLOT,
    SCALAR,
    SINGLE_VALUE_ITER,
    VECTOR,
    delete_task_events,
    json_safe,
    metric_hash,
)

# The room's public names, re-exported for callers that import the package.
__all__ = [
    "EVENT_TYPES", "IMAGE", "LOG", "PLOT", "SCALAR", "SINGLE_VALUE_ITER", "VECTOR",
    "delete_task_events", "json_safe", "metric_hash",
]
