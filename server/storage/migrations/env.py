"""Alembic's environment: run the pending revisions on the connection schema.py passes in
`config.attributes["connection"]`, in one transaction (SQLite and PostgreSQL both have
transactional DDL, so a failed upgrade leaves the schema as it was).

Run by hand (`alembic -c server/storage/alembic.ini ...`) it connects to $SHIPYARD_DB, or to
the SQLite database of $SHIPYARD_DATA_DIR.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import text

from server.storage import tables

# Any constant both replicas agree on: PostgreSQL's advisory lock id for "the schema is changing".
_MIGRATION_LOCK = 0x5348_4950_5944


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=tables.metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from server.config import load_server_config
    from server.storage.schema import migration_engine

    engine = migration_engine(load_server_config().db_url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
