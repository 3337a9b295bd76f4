"""Baseline: the schema of the last release before Alembic (main at 6d6fb1f).

A fresh database gets every table here. A database made before Alembic (no alembic_version
table) gets what that release's own start-up upgrade gave it: missing tables, missing nullable
columns and missing indexes are added, a table that gained columns has them derived from each
row's document, and a data dir from before task_metrics gets that table filled. Nothing is
dropped or altered.

The tables are a frozen copy, never server/storage/tables.py: that file describes the newest
schema, and a later revision changes it.

Revision ID: 0001
Revises:
"""
from __future__ import annotations

from typing import Any

from alembic import op
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
    bindparam,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import Text as TextType
from sqlalchemy.engine import Connection

from server.storage import tables as live
from server.storage.store import columns_for, metric_rows

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = 32


def _documents(md: MetaData) -> None:
    Table("projects", md, Column("id", String(ID), primary_key=True),
          Column("name", TextType, nullable=False, index=True), Column("created", Float, nullable=False),
          Column("last_update", Float, nullable=False), Column("doc", JSON, nullable=False))
    Table("tasks", md, Column("id", String(ID), primary_key=True), Column("name", TextType, nullable=False),
          Column("project", String(ID), index=True), Column("status", String(32), nullable=False, index=True),
          Column("type", String(32), nullable=False), Column("parent", String(ID), index=True),
          Column("created", Float, nullable=False), Column("last_update", Float, nullable=False, index=True),
          Column("last_change", Float, nullable=False, index=True), Column("lease_expires", Float, index=True),
          Column("doc", JSON, nullable=False), Column("archived", Boolean), Column("started", Float),
          Column("completed", Float),
          Index("ix_tasks_project_stats", "project", "status", "archived", "started", "completed", "last_change"))
    Table("queues", md, Column("id", String(ID), primary_key=True),
          Column("name", TextType, nullable=False, unique=True), Column("created", Float, nullable=False),
          Column("doc", JSON, nullable=False))
    Table("workers", md, Column("id", TextType, primary_key=True), Column("last_activity", Float, nullable=False),
          Column("doc", JSON, nullable=False))
    Table("models", md, Column("id", String(ID), primary_key=True), Column("name", TextType, nullable=False),
          Column("project", String(ID), index=True), Column("task", String(ID), index=True),
          Column("created", Float, nullable=False), Column("last_update", Float, nullable=False),
          Column("doc", JSON, nullable=False))


def _side_tables(md: MetaData) -> None:
    Table("task_metrics", md, Column("task", String(ID), primary_key=True),
          Column("metric", TextType, primary_key=True), Column("value", Float), Column("min_value", Float),
          Column("max_value", Float), Index("ix_task_metrics_value", "metric", "value", "task"),
          Index("ix_task_metrics_min", "metric", "min_value", "task"),
          Index("ix_task_metrics_max", "metric", "max_value", "task"))
    Table("queue_entries", md, Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("queue", String(ID), nullable=False), Column("task", String(ID), nullable=False, index=True),
          Column("position", Float, nullable=False), Column("added", Float, nullable=False),
          Index("ix_queue_entries_queue_position", "queue", "position"))
    Table("worker_stats", md, Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("worker", TextType, nullable=False), Column("timestamp", Float, nullable=False, index=True),
          Column("task", String(ID)), Column("stats", JSON, nullable=False),
          Index("ix_worker_stats_worker_ts", "worker", "timestamp"))
    Table("queue_metrics", md, Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("queue", String(ID), nullable=False), Column("timestamp", Float, nullable=False),
          Column("length", Integer, nullable=False), Column("avg_wait", Float, nullable=False),
          Index("ix_queue_metrics_queue_ts", "queue", "timestamp"))
    Table("events", md, Column("seq", Integer, primary_key=True, autoincrement=True),
          Column("task", String(ID), nullable=False), Column("type", String(32), nullable=False),
          Column("iter", BigInteger), Column("metric", TextType), Column("variant", TextType),
          Column("timestamp", BigInteger, nullable=False), Column("timestamp_max", BigInteger, nullable=False),
          Column("n_events", Integer, nullable=False), Column("value", Float), Column("event_key", String(32)),
          Column("doc", JSON, nullable=False), Index("ix_events_task_type_seq", "task", "type", "seq"),
          Index("ix_events_task_type_ts", "task", "type", "timestamp"),
          Index("ux_events_event_key", "event_key", unique=True, sqlite_where=text("event_key IS NOT NULL"),
                postgresql_where=text("event_key IS NOT NULL")))
    Table("credentials", md, Column("access_key", String(64), primary_key=True),
          Column("secret_hash", TextType, nullable=False), Column("name", TextType, nullable=False),
          Column("role", String(32), nullable=False), Column("created", Float, nullable=False),
          Column("revoked", Boolean, nullable=False), Column("expires", Float), Column("instance", TextType),
          Column("minted_by", String(64)))
    Table("server_meta", md, Column("key", String(64), primary_key=True),
          Column("value", TextType, nullable=False))


def baseline() -> MetaData:
    md = MetaData()
    _documents(md)
    _side_tables(md)
    return md


def upgrade() -> None:
    conn = op.get_bind()
    md = baseline()
    had_metrics = inspect(conn).has_table("task_metrics")
    for table in md.sorted_tables:
        if inspect(conn).has_table(table.name):
            _complete(conn, table)
        else:
            table.create(conn)
    if inspect(conn).has_table("tasks") and not had_metrics:
        _fill_task_metrics(conn, md.tables["tasks"], md.tables["task_metrics"])


def downgrade() -> None:
    raise NotImplementedError("Shipyard migrates forward only: restore the backup taken before the upgrade")


def _complete(conn: Connection, table: Table) -> None:
    """A table a pre-Alembic release made: add the nullable columns and the indexes it lacks."""
    inspector = inspect(conn)
    present = {c["name"] for c in inspector.get_columns(table.name)}
    added = [c for c in table.columns if c.name not in present and c.nullable]
    for column in added:
        kind = column.type.compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
    indexes = {i["name"] for i in inspector.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexes:
            index.create(conn)
    if added and "doc" in table.c:
        _derive_columns(conn, table)


def _derive_columns(conn: Connection, table: Table, batch: int = 1000) -> None:
    """Write every row's derived columns from its document, a batch of rows at a time."""
    names = [c.name for c in table.columns if c.name not in ("id", "doc")]
    stmt = update(table).where(table.c.id == bindparam("p_id")).values({n: bindparam(f"v_{n}") for n in names})
    last = ""
    while True:
        rows = conn.execute(select(table.c.id, table.c.doc).where(table.c.id > last)
                            .order_by(table.c.id).limit(batch)).all()
        if not rows:
            return
        conn.execute(stmt, [{"p_id": row[0], **_derived(table, names, dict(row[1]))} for row in rows])
        last = rows[-1][0]


def _derived(table: Table, names: list[str], doc: dict) -> dict[str, Any]:
    values = columns_for(live.metadata.tables[table.name], doc)
    return {f"v_{n}": values.get(n) for n in names}


def _fill_task_metrics(conn: Connection, tasks: Table, task_metrics: Table, batch: int = 1000) -> None:
    """Write task_metrics for every task (a data dir from before the table), a batch at a time."""
    last = ""
    while True:
        rows = conn.execute(select(tasks.c.id, tasks.c.doc).where(tasks.c.id > last)
                            .order_by(tasks.c.id).limit(batch)).all()
        if not rows:
            return
        values = [m for row in rows for m in metric_rows({**dict(row[1]), "id": row[0]})]
        if values:
            conn.execute(insert(task_metrics), values)
        last = rows[-1][0]
