"""The schema as the code reads and writes it; the migrations create it in a database.

A change here needs a new migration in ``migrations/versions``; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC, read back as UTC on every database.

    SQLite has no time zones: values are stored as naive UTC text and given their
    ``tzinfo`` back when read. Naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: give it a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# SQL NULL for None, so that "no result" is NULL rather than the JSON text 'null'.
JSONDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
# SQLite gives autoincrement only to a column declared exactly INTEGER PRIMARY KEY.
BigID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(naming_convention=NAMING_CONVENTION)

nodes = Table(
    "nodes",
    metadata,
    Column("certname", String(255), nullable=False),
    Column("facts", JSONDocument, nullable=False),
    Column("facts_timestamp", UTCDateTime(), nullable=True),
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("last_seen", UTCDateTime(), nullable=False),
    # What the node's agent can run (shell, python, ...); NULL until it has said.
    Column("features", JSONDocument, nullable=True),
    PrimaryKeyConstraint("certname"),
)

# The classifier's node groups (PE's shape); the root group is its own parent, and
# pinned nodes live in the rule. serial_number grows with every change (PE's check
# against lost updates).
node_groups = Table(
    "node_groups",
    metadata,
    Column("id", String(36), nullable=False),
    Column("name", String(255), nullable=False),
    Column("parent", String(36), nullable=False),
    Column("description", Text, nullable=True),
    Column("environment", String(255), nullable=False),
    Column("environment_trumps", Boolean, nullable=False),
    Column("rule", JSONDocument, nullable=True),
    Column("classes", JSONDocument, nullable=False),
    Column("variables", JSONDocument, nullable=False),
    Column("config_data", JSONDocument, nullable=False),
    Column("last_edited", UTCDateTime(), nullable=False),
    Column("serial_number", BigInteger, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("name"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("environment", String(255), nullable=False),
    Column("description", Text, nullable=False),
    Column("options", JSONDocument, nullable=False),
    Column("node_count", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Index(None, "created_at"),
    # Ids are never reused, even after old jobs are deleted: they appear in URLs.
    sqlite_autoincrement=True,
)

job_nodes = Table(
    "job_nodes",
    metadata,
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("certname", String(255), nullable=False),
    Column("transaction_id", String(255), nullable=False),
    Column("state", String(32), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("result", JSONDocument, nullable=True),
    Column("message", Text, nullable=True),
    PrimaryKeyConstraint("job_id", "certname"),
    UniqueConstraint("transaction_id"),
    Index(None, "job_id", "state"),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("certname", String(255), nullable=True),
    Column("timestamp", UTCDateTime(), nullable=False),
    Column("message", Text, nullable=False),
    Column("details", JSONDocument, nullable=False),
    Index(None, "job_id", "id"),
    sqlite_autoincrement=True,
)
