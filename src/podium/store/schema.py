"""Creating and upgrading the schema with Alembic, from code, without ``alembic.ini``.

To write a new migration, generate it against a database at the current head::

    from alembic import command
from alembic.config import Config
    from podium.store import schema
    with engine.begin() as connection:
        command.revision(schema.config(connection), "what changes", autogenerate=True)

then review it, and spell its types out rather than importing them from ``tables``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection

from podium.errors import StoreError

MIGRATIONS = Path(__file__).with_name("migrations")

# Key of the PostgreSQL advisory lock that serialises servers migrating one database.
_MIGRATION_LOCK = 0x706F6469756D  # "podium"


def config(connection: Connection) -> Config:
    """An Alembic configuration that migrates ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The revision the code expects."""
    revision = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if revision is None:
        raise StoreError(f"no migrations found in {MIGRATIONS}: the installation is incomplete")
    return revision


def current(connection: Connection) -> str | None:
    """The revision the database is at, ``None`` when it has no schema yet."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> None:
    """Bring the schema to the head revision, within the caller's transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    try:
        command.upgrade(config(connection), "head")
    except CommandError as error:
        raise StoreError(
            f"cannot migrate the database: {error}; it may have been migrated by a newer "
            "Podium, so run that version or restore a backup"
        ) from error
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise StoreError(
                f"migrating left {len(broken)} rows whose foreign keys point nowhere "
                f"(first: {tuple(broken[0])}); the migration was rolled back, report this"
            )
