"""Engines for SQLite and PostgreSQL, and the translation of their errors.

SQLite is opened in WAL mode with ``synchronous=NORMAL``, a busy timeout and foreign
keys on. Its driver's own transaction handling is switched off so that a transaction
that will write starts with ``BEGIN IMMEDIATE``: it then waits for the write lock
(up to the busy timeout) instead of failing at its first write when another
connection got there first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from podium.errors import ConfigError, PodiumError, StoreError, ValidationError

# Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE.
WRITE = "podium_write"

_SQLITE_DRIVERS = frozenset({"sqlite", "sqlite+pysqlite"})
_POSTGRES_DRIVERS = frozenset({"postgresql", "postgres", "postgresql+psycopg"})


def database_url(url: str) -> URL:
    """Parse a database URL; a plain ``postgresql://`` URL gets the psycopg driver.

    Anything without ``://`` is taken as the path of a SQLite file.
    """
    if "://" not in url:
        return URL.create("sqlite", database=url)
    try:
        parsed = make_url(url)
    except exc.ArgumentError as error:
        raise ConfigError(f"invalid database URL {url!r}: {error}") from error
    if parsed.drivername in _SQLITE_DRIVERS:
        return parsed.set(drivername="sqlite")
    if parsed.drivername in _POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite:///PATH or postgresql://USER@HOST/DATABASE"
    )


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def create_engine(url: URL, *, busy_timeout: float) -> Engine:
    """An engine whose connections are set up for Podium's use of the database."""
    json_options: dict[str, Any] = {
        "json_serializer": json_dumps,
        "json_deserializer": orjson.loads,
    }
    if url.get_backend_name() == "sqlite":
        memory = _is_memory(url)
        if not memory and url.database and url.query.get("uri") != "true":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False},
            # An in-memory database lives in one connection, so share that one.
            poolclass=StaticPool if memory else None,
            **json_options,
        )
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    query = url.query
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in query:
        connect_args["connect_timeout"] = 10
    if "application_name" not in query:
        connect_args["application_name"] = "podium"
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **json_options)


def json_dumps(value: Any) -> str:
    """JSON text as Podium stores it: compact, UTF-8, keys as given."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError as error:
        raise ValidationError(f"a value cannot be stored as JSON: {error}") from error


def _sqlite_pragmas(
    busy_timeout: float,
) -> Callable[[sqlite3.Connection, ConnectionPoolEntry], None]:
    milliseconds = int(busy_timeout * 1000)

    def on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    return on_connect


def _sqlite_begin(connection: Connection) -> None:
    write = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


@contextmanager
def translated_errors(url: URL) -> Iterator[None]:
    """Turn SQLAlchemy's and the drivers' exceptions into Podium's, with advice.

    Other SQLAlchemy errors are bugs in this package and keep their traceback.
    """
    try:
        yield
    except exc.DBAPIError as error:
        raise translate(error, url) from error
    except exc.TimeoutError as error:
        where = url.render_as_string(hide_password=True)
        raise StoreError(
            f"every connection to {where} stayed busy: "
            "the database is overloaded or a transaction hangs; retry later",
            details={"database": where},
        ) from error
    except exc.StatementError as error:
        # Raised before reaching the database: a value our column types refuse.
        if isinstance(error.orig, PodiumError):
            raise error.orig from error
        if not isinstance(error.orig, ValueError | TypeError):
            raise
        raise ValidationError(f"a value cannot be stored: {error.orig}") from error


def translate(error: exc.DBAPIError, url: URL) -> PodiumError:
    """The Podium error for a driver's error."""
    where = url.render_as_string(hide_password=True)
    details = {"database": where}
    orig = error.orig
    first_line = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if sqlstate == "42P01" or first_line.startswith("no such table"):
        return StoreError(
            f"the database {where} has no Podium schema or an old one ({first_line}): "
            "migrate it first (Store.migrate(), which the server runs at start-up)",
            details=details,
        )
    if isinstance(error, exc.DataError) or sqlstate.startswith("22"):
        return ValidationError(f"the database refused a value: {first_line}", details=details)
    if "database is locked" in first_line or sqlstate in ("40001", "40P01", "55P03"):
        return StoreError(
            f"the database {where} stayed locked by another writer ({first_line}): "
            "retry; if it keeps happening, look for a process holding a long transaction",
            details=details,
        )
    if url.get_backend_name() == "sqlite" and "unable to open database file" in first_line:
        return StoreError(
            f"cannot open the SQLite file {url.database}: "
            "check that its directory exists and is writable by this user",
            details=details,
        )
    if isinstance(error, exc.OperationalError | exc.InterfaceError) and (
        not sqlstate or sqlstate.startswith(("08", "57P"))
    ):
        return StoreError(
            f"cannot reach the database {where} ({first_line}): "
            "check that the server is running and that the URL is right",
            details=details,
        )
    return StoreError(f"the database {where} failed: {first_line}", details=details)
