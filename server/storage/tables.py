"""Table definitions (SQLAlchemy Core). One schema for SQLite and PostgreSQL.

Each entity keeps its full ClearML document in a JSON `doc` column, with the fields that
queries filter or sort on copied into real, indexed columns. Handlers never write SQL
strings; they go through `Store`.
"""
from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

ID = 32

projects = Table(
    "projects", metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", Text, nullable=False, index=True),
    Column("created", Float, nullable=False),
    Column("last_update", Float, nullable=False),
    Column("doc", JSON, nullable=False),
)

tasks = Table(
    "tasks", metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", Text, nullable=False),
    Column("project", String(ID), index=True),
    Column("status", String(32), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("parent", String(ID), index=True),
    Column("created", Float, nullable=False),
    Column("last_update", Float, nullable=False, index=True),
    Column("last_change", Float, nullable=False, index=True),
    Column("lease_expires", Float, index=True),  # set while an agent holds a lease on the task
    Column("doc", JSON, nullable=False),
    # For projects.get_all_ex's stats, one grouped query over a covering index: the `archived`
    # system tag and the run's start and end (epoch seconds).
    Column("archived", Boolean),
    Column("started", Float),
    Column("completed", Float),
    Index("ix_tasks_project_stats", "project", "status", "archived", "started", "completed", "last_change"),
)

# Each task's last metric values, one row per metric/variant (`metric` is "<metric hash>.<variant
# hash>", the keys of the task's last_metrics), so the experiment table sorted by a metric column
# reads an index rather than every task's document. Written by Store.insert/save/delete from the
# document, like the derived columns above.
task_metrics = Table(
    "task_metrics", metadata,
    Column("task", String(ID), primary_key=True),
    Column("metric", Text, primary_key=True),
    Column("value", Float),
    Column("min_value", Float),
    Column("max_value", Float),
    Index("ix_task_metrics_value", "metric", "value", "task"),
    Index("ix_task_metrics_min", "metric", "min_value", "task"),
    Index("ix_task_metrics_max", "metric", "max_value", "task"),
)

queues = Table(
    "queues", metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created", Float, nullable=False),
    Column("doc", JSON, nullable=False),
)

queue_entries = Table(
    "queue_entries", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("queue", String(ID), nullable=False),
    Column("task", String(ID), nullable=False, index=True),
    Column("position", Float, nullable=False),
    Column("added", Float, nullable=False),
    Index("ix_queue_entries_queue_position", "queue", "position"),
    # A queue's length and mean wait (queue_metrics.sample, on every enqueue and pop) read this
    # index alone: over the table, one queue's 2,000 entries are spread over as many pages.
    Index("ix_queue_entries_queue_added", "queue", "added"),
)

workers = Table(
    "workers", metadata,
    Column("id", Text, primary_key=True),
    Column("last_activity", Float, nullable=False),
    Column("doc", JSON, nullable=False),
)

# Workers' machine stats, one row per status report (the report's `machine_stats` as sent), kept
# for a bounded time (server/services/workers/stats.py) for workers.get_stats / get_activity_report.
worker_stats = Table(
    "worker_stats", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("worker", Text, nullable=False),
    Column("timestamp", Float, nullable=False, index=True),  # epoch seconds
    Column("task", String(ID)),
    Column("stats", JSON, nullable=False),
    Index("ix_worker_stats_worker_ts", "worker", "timestamp"),
)

# A queue's length and its entries' average wait, sampled when its entries change
# (server/services/queues/metrics.py) for queues.get_queue_metrics.
queue_metrics = Table(
    "queue_metrics", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("queue", String(ID), nullable=False),
    Column("timestamp", Float, nullable=False),  # epoch seconds
    Column("length", Integer, nullable=False),
    Column("avg_wait", Float, nullable=False),
    Index("ix_queue_metrics_queue_ts", "queue", "timestamp"),
)

events = Table(
    "events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("task", String(ID), nullable=False),
    Column("type", String(32), nullable=False),
    Column("iter", BigInteger),
    Column("metric", Text),
    Column("variant", Text),
    # Non-log rows hold one event. Log rows hold a chunk of one task's lines from one request
    # (`doc` is their list, sorted by timestamp), so ingest costs one row per batch, not per
    # line: `timestamp`..`timestamp_max` is the chunk's time span and `n_events` its size.
    Column("timestamp", BigInteger, nullable=False),
    Column("timestamp_max", BigInteger, nullable=False),
    Column("n_events", Integer, nullable=False),
    Column("value", Float),  # scalar value, so histograms never parse documents
    Column("event_key", String(32)),  # md5 id of non-log events (overwrite on re-report)
    Column("doc", JSON, nullable=False),
    Index("ix_events_task_type_seq", "task", "type", "seq"),
    Index("ix_events_task_type_ts", "task", "type", "timestamp"),
    Index("ux_events_event_key", "event_key", unique=True,
          sqlite_where=text("event_key IS NOT NULL"), postgresql_where=text("event_key IS NOT NULL")),
)

models = Table(
    "models", metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", Text, nullable=False),
    Column("project", String(ID), index=True),
    Column("task", String(ID), index=True),
    Column("created", Float, nullable=False),
    Column("last_update", Float, nullable=False),
    Column("doc", JSON, nullable=False),
)

credentials = Table(
    "credentials", metadata,
    Column("access_key", String(64), primary_key=True),
    Column("secret_hash", Text, nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("role", String(32), nullable=False, default="admin"),
    Column("created", Float, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("expires", Float),     # epoch seconds after which the key is refused; NULL = never
    Column("instance", Text),     # the machine or run a short-lived key was minted for
    Column("minted_by", String(64)),  # the access key that minted it through the API; NULL = CLI/startup
)

server_meta = Table(
    "server_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Fair share (server/fairshare/): quotas set through the API (they override the `quotas` setting),
# and each user's and project's GPU usage, kept up to date as claims start and end so that the
# queue's fair-share order never reads task history.
fair_quotas = Table(
    "fair_quotas", metadata,
    Column("entity", String(200), primary_key=True),   # "user:<id>" or "project:<id>"
    Column("gpus", Integer, nullable=False),
    Column("borrow", Boolean, nullable=False),
    Column("updated", Float, nullable=False),
)

fair_usage = Table(
    "fair_usage", metadata,
    Column("entity", String(200), primary_key=True),
    Column("gpu_seconds", Float, nullable=False),    # ended claims, decayed to as_of
    Column("as_of", Float, nullable=False),
    Column("running_gpus", Integer, nullable=False),
    Column("running_start", Float, nullable=False),  # sum of gpus * start of the running claims
)
