"""Schema migrations (server/storage/schema.py, migrations/): a fresh database gets the head
revision and exactly the schema tables.py describes; a database made by the previous release
(tests/fixtures/prev_release: SQL dumps) upgrades with its data intact on SQLite and on
PostgreSQL; upgrading twice changes nothing; a newer or an old schema is refused by name."""
from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from server.config import ServerConfig
from server.storage import schema
from server.storage import tables as t
from server.storage.store import Store, sqlite_url
from shipyard.cli import main
from shipyard.errors import SchemaError
from tests import pg
from tests.fixtures.prev_release.scenario import read_back
from tests.helpers import start_server

PREV = Path(__file__).resolve().parent.parent / "fixtures" / "prev_release"


def described(url: str) -> dict:
    """Tables, columns, keys and indexes as the database reports them (alembic's own table left out)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        insp = inspect(engine)
        return {name: {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(name)],
            "pk": insp.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(name)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(name)),
        } for name in sorted(insp.get_table_names()) if name != "alembic_version"}
    finally:
        engine.dispose()


def revision(url: str) -> str | None:
    return schema.status(url).current


def assert_migrations_match_tables(migrated: str, scratch: str) -> None:
    """The schema the migrations build equals the one tables.py declares: a change to tables.py
    without a revision (or the reverse) fails here."""
    engine = create_engine(scratch.replace("postgresql://", "postgresql+psycopg://", 1))
    t.metadata.create_all(engine)
    engine.dispose()
    assert described(migrated) == described(scratch), \
        "server/storage/tables.py and the migrations disagree: add a revision (docs/operations.md)"


def load_sqlite_dump(data_dir: Path) -> str:
    data_dir.mkdir(parents=True)
    with sqlite3.connect(data_dir / "shipyard.db") as db:
        db.executescript((PREV / "sqlite.sql").read_text())
    return sqlite_url(data_dir)


def expected(dialect: str) -> dict:
    return json.loads((PREV / "expected.json").read_text())[dialect]


def test_a_fresh_database_gets_the_head_revision_and_the_declared_schema(tmp_path):
    url = sqlite_url(tmp_path)
    Store(url).close()
    assert revision(url) == schema.head()
    assert_migrations_match_tables(url, f"sqlite:///{tmp_path / 'scratch.db'}")


def test_the_previous_release_sqlite_database_upgrades_at_start_with_its_data(tmp_path):
    data_dir = tmp_path / "srv"
    url = load_sqlite_dump(data_dir)
    assert revision(url) is None and schema.status(url).legacy
    server = start_server(data_dir)
    try:
        assert read_back(server.api()) == expected("sqlite")
    finally:
        server.stop()
    assert revision(url) == schema.head()
    assert (data_dir / "shipyard.db.pre-legacy").exists(), "the database is copied aside before an upgrade"
    (tmp_path / "fresh").mkdir()
    fresh = sqlite_url(tmp_path / "fresh")
    Store(fresh).close()
    assert described(url) == described(fresh), "an upgraded database has the schema a fresh one gets"


def test_upgrading_twice_changes_nothing(tmp_path, capsys):
    data_dir = tmp_path / "srv"
    url = load_sqlite_dump(data_dir)
    assert main(["server", "--data-dir", str(data_dir), "--upgrade-db"]) in (0, None)
    assert f"-> {schema.head()}" in capsys.readouterr().out
    before = (data_dir / "shipyard.db").read_bytes()
    assert main(["server", "--data-dir", str(data_dir), "--upgrade-db"]) in (0, None)
    assert "nothing to do" in capsys.readouterr().out
    assert schema.prepare(url, upgrade=True) == "current"
    assert (data_dir / "shipyard.db").read_bytes() == before


def test_an_old_schema_is_refused_unless_upgrades_are_allowed(tmp_path):
    url = load_sqlite_dump(tmp_path / "srv")
    with pytest.raises(SchemaError, match="--upgrade-db"):
        Store(url)
    assert revision(url) is None, "a refused start leaves the database as it was"


def test_a_database_newer_than_the_code_is_refused(tmp_path, capsys):
    url = sqlite_url(tmp_path)
    Store(url).close()
    with sqlite3.connect(tmp_path / "shipyard.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'f00d'")
    with pytest.raises(SchemaError, match="revision f00d, which this Shipyard does not know"):
        Store(url, upgrade=True)
    assert main(["server", "--data-dir", str(tmp_path), "--upgrade-db"]) == 2
    assert "a newer release has upgraded it" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pg_server(pg_cluster):
    return pg_cluster


def test_the_previous_release_postgresql_database_upgrades_and_survives_the_pg_dump_route(pg_server, tmp_path, capsys):
    """Upgraded by --upgrade-db (a start without it is refused), read back; then backed up as
    docs/operations.md says (pg_dump -Fc while the server runs, pg_restore into a new database)
    and read back again from a server on the restored one."""
    url = pg_server.new_database("prev")
    subprocess.run([pg.tool("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(PREV / "postgresql.sql")],
                   check=True, capture_output=True)
    with pytest.raises(SchemaError, match="--upgrade-db"):  # the safe default on a shared database
        Store(url, upgrade=ServerConfig(db=url).upgrade_at_start)
    assert main(["server", "--db", url, "--data-dir", str(tmp_path / "b"), "--upgrade-db"]) in (0, None)
    assert f"pre-migration -> {schema.head()}" in capsys.readouterr().out
    server = start_server(tmp_path / "c", db=url)
    try:
        assert read_back(server.api()) == expected("postgresql")
        subprocess.run([pg.tool("pg_dump"), "-Fc", "-f", str(tmp_path / "dump"), "-d", url], check=True)
    finally:
        server.stop()
    assert schema.prepare(url, upgrade=False) == "current"
    assert_migrations_match_tables(url, pg_server.new_database("declared"))
    restored = pg_server.new_database("restored")
    subprocess.run([pg.tool("pg_restore"), "--no-owner", "-d", restored, str(tmp_path / "dump")], check=True)
    server = start_server(tmp_path / "d", db=restored)
    try:
        assert read_back(server.api()) == expected("postgresql")
    finally:
        server.stop()
