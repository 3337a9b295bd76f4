"""events.*: metric/log ingest and the read-back endpoints.

Importing this module registers every events.* endpoint. The code lives in:

* events_store   - the `events` table's row format (log chunks, event types), shared helpers,
                   delete_task_events;
* events_ingest  - events.add_batch / events.add: validation, lease fencing and dedup of
                   re-sent log lines, storage, last_iteration/last_metrics;
* events_read    - task logs, raw events, download, deletion, and the request helpers every
                   reader shares (target lookup, metric filters, scroll ids);
* events_metrics - scalar/vector histograms, single and latest values, plots, debug images.
"""
from __future__ import annotations

from server.services import events_ingest, events_metrics, events_read  # noqa: F401  (registers endpoints)
from server.services.events_store import (  # noqa: F401  (imported from here by tasks, task_status, models)
    EVENT_TYPES, IMAGE, LOG, PLOT, SCALAR, SINGLE_VALUE_ITER, VECTOR, delete_task_events, json_safe,
    metric_hash,
)
