"""Prepared statements: Core expressions compiled once per dialect, run on the DBAPI cursor.

`Connection.execute` costs tens of microseconds of Python per statement (event dispatch,
cache keys, execution context, result wrapping): more than SQLite takes to run a keyed
lookup. The statements on the hot paths (document get/save, queue entries, the pop) are
declared once as `Prepared(core_statement)`. The first execution on a dialect compiles it
with SQLAlchemy and keeps the SQL text, the parameter order and the type conversions; every
later one only converts, executes and wraps rows. The SQL still comes from SQLAlchemy, so
SQLite and PostgreSQL keep one definition.

Only plain bound parameters are supported (no expanding IN lists); statements with those
stay ordinary Core statements and run through SQLAlchemy.
"""
from __future__ import annotations

import functools
from collections import namedtuple
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import bindparam, literal_column, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from server.rpc.jsonutil import dumps


class Rows:
    """The rows of one execution: the part of SQLAlchemy's Result the services use."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list, rowcount: int):
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def all(self) -> list:
        return self._rows

    def __iter__(self) -> Iterator:
        return iter(self._rows)


class _Compiled:
    """One statement compiled for one dialect."""

    def __init__(self, stmt: ClauseElement, dialect: Dialect):
        # SQLCompiler's own attributes (some private): the compiled form SQLAlchemy itself runs
        compiled: Any = stmt.compile(dialect=dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("Prepared statements take plain bound parameters only (no expanding IN)")
        self.sql = compiled.string
        defaults = compiled.construct_params(_check=False)
        processors = compiled._bind_processors
        names = list(compiled.positiontup) if dialect.positional else list(defaults)
        self.positional = dialect.positional
        self.binds: list[tuple[str, Any, Callable | None]] = [
            (name, defaults.get(name), processors.get(name)) for name in names]
        self.names = [(name, default) for name, default, _ in self.binds]
        # (index, processor) of the parameters the driver needs converted (JSON documents...)
        self.processed = [(i, proc) for i, (_, _, proc) in enumerate(self.binds) if proc is not None]
        self.dialect = dialect
        self.columns = compiled._result_columns
        self.returns_rows = bool(self.columns)
        self.row_type: Any = namedtuple("Row", [c.keyname for c in self.columns], rename=True) if self.columns else None
        self.converters: list[Callable | None] | None = None  # from the first result's column types
        self.convert = False

    def parameters(self, params: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        get = params.get
        values = [get(name, default) for name, default in self.names]
        for i, processor in self.processed:
            value = values[i]
            if value is not None:
                values[i] = processor(value)
        if self.positional:
            return values
        return {name: value for (name, _), value in zip(self.names, values, strict=True)}

    def rows(self, raw_rows: list[tuple], description: Sequence) -> list:
        assert self.row_type is not None  # rows() is called only for statements that return rows
        make = self.row_type._make
        converters = self.converters
        if converters is None:
            # Some drivers' conversions depend on the column's database type (PostgreSQL numerics).
            # `convert` is set before `converters`: another thread that sees them set sees both.
            converters = [c.type._cached_result_processor(self.dialect, d[1]) for c, d in zip(self.columns, description, strict=False)]
            self.convert = any(converters)
            self.converters = converters
        if not self.convert:
            return [make(r) for r in raw_rows]
        return [make([c(v) if c is not None else v for c, v in zip(converters, r, strict=False)]) for r in raw_rows]


class Prepared:
    """A Core statement to be compiled once per dialect and executed on the raw connection."""

    __slots__ = ("statement", "_compiled")

    def __init__(self, statement: ClauseElement):
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        key = dialect.name + "+" + dialect.driver
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _Compiled(self.statement, dialect)
        return compiled

    def run(self, dbapi_conn: Any, dialect: Dialect, params: dict[str, Any] | None, cursor: Any = None) -> Rows:
        """Execute and read the rows, on `cursor` if given (a transaction's own, reused: making
        a psycopg cursor costs about as much as running a keyed lookup), else on a new one."""
        compiled = self.compiled(dialect)
        values = compiled.parameters(params or {})
        owned = cursor is None
        if owned:
            cursor = dbapi_conn.cursor()
        try:
            cursor.execute(compiled.sql, values)
            raw = cursor.fetchall() if compiled.returns_rows else []
            return Rows(compiled.rows(raw, cursor.description) if raw else [], cursor.rowcount)
        except dialect.loaded_dbapi.Error as exc:
            # The same exception classes SQLAlchemy raises (IntegrityError, OperationalError...).
            raise DBAPIError.instance(compiled.sql, values, exc, dialect.loaded_dbapi.Error,
                                      dialect=dialect) from exc
        finally:
            if owned:
                cursor.close()

    def run_each(self, dbapi_conn: Any, dialect: Dialect, each: Sequence[dict[str, Any]]) -> list[Rows]:
        """Execute once per parameter set in `each`, every one sent before any answer is read
        (in a PostgreSQL pipeline: one round trip for all); the rows of each, in order."""
        compiled = self.compiled(dialect)
        cursors: list[tuple[Any, Any]] = []
        values: Any = None
        try:
            for params in each:
                values = compiled.parameters(params)
                cursors.append((dbapi_conn.cursor(), values))
                cursors[-1][0].execute(compiled.sql, values)
            out = []
            for cursor, _ in cursors:
                raw = cursor.fetchall() if compiled.returns_rows else []
                out.append(Rows(compiled.rows(raw, cursor.description) if raw else [], cursor.rowcount))
            return out
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(compiled.sql, values, exc, dialect.loaded_dbapi.Error,
                                      dialect=dialect) from exc
        finally:
            for cursor, _ in cursors:
                cursor.close()

    def run_many(self, dbapi_conn: Any, dialect: Dialect, rows: Sequence[dict[str, Any]]) -> None:
        """Execute once per parameter set in `rows`, as the driver's executemany (psycopg: one
        pipelined round trip for all of them). For writes: nothing is returned."""
        if not rows:
            return
        compiled = self.compiled(dialect)
        values = [compiled.parameters(params) for params in rows]
        cursor = dbapi_conn.cursor()
        try:
            cursor.executemany(compiled.sql, values)
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(compiled.sql, values[0], exc, dialect.loaded_dbapi.Error,
                                      dialect=dialect) from exc
        finally:
            cursor.close()


class ArrayWrite:
    """One INSERT of many rows (optionally with a conflict clause).

    SQLite runs `prepared` through the driver's executemany (its loop is in C already).
    PostgreSQL runs one statement over the rows sent as one JSON array (`INSERT ... SELECT ...
    FROM json_to_recordset(%s::json) AS r(column type, ...)`): psycopg's executemany spends ~40-60 us of Python
    a row (adapting, preparing and queueing each statement) and its array parameters escape
    every text element with a regular expression, while orjson writes the whole array in C and
    PostgreSQL parses it in C. Rows keep their order (the function scan yields them in order,
    so serial columns number them as executemany would). JSON has no NaN or infinity: rows
    carry None for those (as ingest stores them). Rows whose JSON holds a NUL character go the
    executemany way (PostgreSQL's JSON parser refuses one). Build one with `insert_rows`.

    Not for a DELETE by keys on PostgreSQL, in one statement or one a row: psycopg prepares a
    statement on its fifth run, and the generic plan made while the table was small is a
    sequential scan kept for the connection's life (ingest's point delete averaged 1.2 ms a row
    at 200 reporters). A conflict clause (`insert_rows(conflict=...)`) finds rows through the
    unique index with no plan to choose.
    """

    __slots__ = ("by_row", "pg_sql")

    def __init__(self, by_row: dict[str, Prepared], pg_sql: str):
        self.by_row = by_row  # dialect name -> the statement run once a row (executemany)
        self.pg_sql = pg_sql

    def run_many(self, dbapi_conn: Any, dialect: Dialect, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if dialect.name != "postgresql":
            self.by_row[dialect.name].run_many(dbapi_conn, dialect, rows)
            return
        payload = dumps(rows)
        if "\\u0000" in payload:
            # PostgreSQL's JSON functions refuse a NUL character anywhere in the text they parse,
            # even where a json column could hold it (a console line's): one statement a row then
            self.by_row[dialect.name].run_many(dbapi_conn, dialect, rows)
            return
        params = [payload]
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(self.pg_sql, params)
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(self.pg_sql, params, exc, dialect.loaded_dbapi.Error,
                                      dialect=dialect) from exc
        finally:
            cursor.close()


@functools.lru_cache(maxsize=1)
def _pg() -> Any:
    """A PostgreSQL dialect to write SQL text with (types and quoting; made once)."""
    return postgresql.dialect()


def _pg_type(column: Any) -> str:
    return str(column.type.compile(dialect=_pg()))


def _quoted(name: str) -> str:
    return str(_pg().identifier_preparer.quote(name))


def insert_rows(table: Any, *, conflict: Sequence[str] = (), update: Sequence[str] = (), where: str = "",
                renew: Sequence[str] = ()) -> ArrayWrite:
    """Insert rows into every column of `table` but its autoincrement key. With `conflict` (the
    unique columns; `where`: the predicate of a partial unique index on them), a row whose key
    exists updates the `update` columns instead and sets the `renew` columns to their default
    (an upsert; no two rows of one call may share a key), or is skipped when both are empty.
    Every form comes from this one definition (ON CONFLICT is not portable Core: each backend's
    row-by-row statement is built by its own `insert`)."""
    columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True)]
    names = ", ".join(_quoted(c.name) for c in columns)
    record = ", ".join(f"{_quoted(c.name)} {_pg_type(c)}" for c in columns)
    sql = (f"INSERT INTO {_quoted(table.name)} ({names}) "
           f"SELECT {names} FROM json_to_recordset(%s::json) AS r({record})")
    if conflict:
        sets = ", ".join([f"{_quoted(name)} = excluded.{_quoted(name)}" for name in update]
                         + [f"{_quoted(name)} = DEFAULT" for name in renew])
        sql += (f" ON CONFLICT ({', '.join(map(_quoted, conflict))})" + (f" WHERE {where}" if where else "")
                + " DO " + (f"UPDATE SET {sets}" if sets else "NOTHING"))
    by_row: dict[str, Prepared] = {}
    for name, dialect_insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert)):
        stmt: Any = dialect_insert(table).values({c.name: bindparam(c.name) for c in columns})
        if conflict:
            target = {"index_elements": list(conflict), "index_where": text(where) if where else None}
            sets_ = {**{f: stmt.excluded[f] for f in update}, **{f: literal_column("DEFAULT") for f in renew}}
            stmt = (stmt.on_conflict_do_update(set_=sets_, **target) if sets_
                    else stmt.on_conflict_do_nothing(**target))
        by_row[name] = Prepared(stmt)
    return ArrayWrite(by_row, sql)
