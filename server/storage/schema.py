"""The database schema's version: Alembic revisions in server/storage/migrations, checked and
applied before a `Store` opens the database.

    prepare(url, upgrade=)   what every start does: a fresh database gets the head revision; one
                             at head is left alone; an older one (or one from before Alembic) is
                             upgraded when `upgrade` is true and refused otherwise; one newer
                             than this code is always refused
    upgrade(url)             `shipyard server --upgrade-db`: upgrade to head, say from what
    status(url)              the current and head revisions, without changing anything

The runtime store never goes through Alembic: it only reads the revision once here.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from server.rpc import jsonutil
from shipyard.errors import SchemaError

log = logging.getLogger("shipyard.schema")

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None   # the database's revision; None: fresh, or made before Alembic
    head: str             # the newest revision this code knows
    legacy: bool          # tables without a revision: made by a release before Alembic

    @property
    def fresh(self) -> bool:
        return self.current is None and not self.legacy

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    found = _script().get_current_head()
    assert found is not None, "no revisions in server/storage/migrations/versions"
    return found


def migration_engine(url: str) -> Engine:
    """An engine for schema work only: no pool, and on SQLite an explicit BEGIN IMMEDIATE, so the
    DDL of an upgrade is one transaction too (the driver would run it outside any)."""
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, poolclass=NullPool, json_serializer=jsonutil.dumps,
                           json_deserializer=jsonutil.loads)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    return engine


def _status(conn: Connection) -> SchemaStatus:
    current = MigrationContext.configure(conn).get_current_revision()
    legacy = current is None and inspect(conn).has_table("tasks")
    return SchemaStatus(current=current, head=head(), legacy=legacy)


def _where(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url  # never the password


def _check_known(status: SchemaStatus, url: str) -> None:
    if status.current is None:
        return
    try:
        _script().get_revision(status.current)
    except CommandError:  # "Can't locate revision identified by ..."
        raise SchemaError(
            f"the database {_where(url)} is at schema revision {status.current}, which this Shipyard does not "
            f"know (its newest is {status.head}): a newer release has upgraded it. Run that release, or "
            "restore the backup taken before the upgrade") from None


def status(url: str) -> SchemaStatus:
    engine = migration_engine(url)
    try:
        with engine.connect() as conn:
            return _status(conn)
    finally:
        engine.dispose()


def _run_upgrade(engine: Engine) -> None:
    config = _config()
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
        conn.commit()


def _keep_copy(engine: Engine, revision: str) -> None:
    """Copy a SQLite database aside before upgrading it (<file>.pre-<revision>): going back is
    stopping the server and putting the copy in place. SQLite's online backup, so a consistent copy."""
    path = engine.url.database
    if not path or path == ":memory:":
        return
    target = Path(f"{path}.pre-{revision}")
    with sqlite3.connect(path) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    source.close()
    copy.close()
    log.warning("database %s: copied to %s before upgrading its schema", path, target)


def prepare(url: str, *, upgrade: bool) -> str:
    """Make the database usable by this code; returns what was done: "current", "created" or
    "upgraded". Raises SchemaError for an old database when `upgrade` is false, and always for
    one newer than this code."""
    engine = migration_engine(url)
    try:
        with engine.connect() as conn:
            found = _status(conn)
            conn.rollback()
        _check_known(found, url)
        if found.up_to_date:
            return "current"
        if not found.fresh and not upgrade:
            raise SchemaError(
                f"the database {_where(url)} has schema revision {found.current or 'from before migrations'}, "
                f"older than this Shipyard's {found.head}. Back it up (docs/operations.md), then run "
                "`shipyard server --upgrade-db` with the same --db/--data-dir, or allow upgrades at start "
                "(upgrade_db_at_start = yes in the server config)")
        if not found.fresh and engine.dialect.name == "sqlite":
            _keep_copy(engine, found.current or "legacy")
        _run_upgrade(engine)
        done = "created" if found.fresh else "upgraded"
        log.info("database %s: schema %s %s -> %s", _where(url), done, found.current or "-", found.head)
        return done
    finally:
        engine.dispose()


def upgrade(url: str) -> tuple[SchemaStatus, str]:
    """Upgrade to head (refusing a database newer than this code); the status before, and what was done."""
    before = status(url)
    return before, prepare(url, upgrade=True)
