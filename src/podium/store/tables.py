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
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
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

# The columns PuppetDB's nodes endpoint adds to a node (see ``nodes`` below).
_NODE_TIMESTAMPS = (
    "deactivated",
    "expired",
    "producer_timestamp",
    "catalog_timestamp",
    "report_timestamp",
)
_NODE_STRINGS = (
    "facts_environment",
    "producer",
    "catalog_environment",
    "report_environment",
    "latest_report_status",
    "latest_report_hash",
    "latest_report_job_id",
    "cached_catalog_status",
)
_NODE_FLAGS = (
    "latest_report_noop",
    "latest_report_noop_pending",
    "latest_report_corrective_change",
)

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
    # What PuppetDB's nodes endpoint shows (podium.inventory); NULL where Podium has no
    # catalogs or reports. A node deactivated or expired leaves query results but keeps
    # its facts; newer facts bring it back.
    *(Column(name, UTCDateTime(), nullable=True) for name in _NODE_TIMESTAMPS),
    *(Column(name, String(255), nullable=True) for name in _NODE_STRINGS),
    *(Column(name, Boolean, nullable=True) for name in _NODE_FLAGS),
    PrimaryKeyConstraint("certname"),
    # Covers what inventory queries read of a node, so that they never touch the rows
    # themselves: in SQLite those carry the facts document in overflow pages.
    Index(
        "ix_nodes_inventory",
        "certname",
        "facts_timestamp",
        *_NODE_TIMESTAMPS,
        *_NODE_STRINGS,
        *_NODE_FLAGS,
    ),
)

# The nodes queries leave out by default; few, with an index of their own.
INACTIVE = nodes.c.deactivated.is_not(None) | nodes.c.expired.is_not(None)
Index("ix_nodes_inactive", nodes.c.certname, sqlite_where=INACTIVE, postgresql_where=INACTIVE)

# The inventory's index of facts (podium.inventory.store): a node's fact set has an id;
# every leaf of the document is a row, by path, so that a query reads one path's rows.
factsets = Table(
    "factsets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "certname",
        String(255),
        ForeignKey("nodes.certname", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("hash", String(40), nullable=False),  # SHA-1 of the facts, to skip unchanged ones
    UniqueConstraint("certname"),
    sqlite_autoincrement=True,  # ids never come back: leaves have no foreign key to care
)

# Every path seen with every type of value it had (PuppetDB's fact_paths); kept for good.
fact_paths = Table(
    "fact_paths",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False),  # JSON array: ["networking", "interfaces", 0]
    Column("type", SmallInteger, nullable=False),  # podium.inventory.facts.FactType
    Column("name", Text, nullable=False),  # the top-level fact
    Column("depth", Integer, nullable=False),
    UniqueConstraint("path", "type"),
    Index(None, "name", "depth"),
)

# One row per leaf (and per structured top-level fact), clustered by path. No foreign
# keys and no index by fact set: on millions of rows they cost more than they give (a
# node's own leaves are found from its document, or by probing each path).
fact_leaves = Table(
    "fact_leaves",
    metadata,
    Column("path_id", Integer, nullable=False),
    Column("factset_id", Integer, nullable=False),
    Column("s", Text, nullable=True),  # a string, or an integer's digits beyond 2**53
    Column("n", Double, nullable=True),  # a number; a boolean as 0 or 1
    PrimaryKeyConstraint("path_id", "factset_id"),
    sqlite_with_rowid=False,
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
    Index(None, "state"),
    Index(None, "owner"),
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
    # While its agent is disconnected: when the node is given up on unless it reconnects.
    Column("give_up_at", UTCDateTime(), nullable=True),
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

# Access control (podium.rbac): users, service accounts and directory users; roles and
# their permissions; directory groups mapped to roles; tokens by digest; the activity log.
rbac_users = Table(
    "rbac_users",
    metadata,
    Column("id", String(36), nullable=False),
    Column("login", String(255), nullable=False),
    Column("kind", String(16), nullable=False),  # local | remote | service
    Column("display_name", String(255), nullable=False),
    Column("email", String(255), nullable=False),
    Column("password_hash", Text, nullable=True),  # local users only
    Column("is_superuser", Boolean, nullable=False),
    Column("is_revoked", Boolean, nullable=False),
    # The directory groups a remote user was in at their last login.
    Column("directory_groups", JSONDocument, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_login", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("login"),
)

rbac_roles = Table(
    "rbac_roles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("display_name", String(255), nullable=False),
    Column("description", Text, nullable=False),
    Column("permissions", JSONDocument, nullable=False),  # [{object_type, action, ...}]
    UniqueConstraint("display_name"),
    sqlite_autoincrement=True,
)

rbac_user_roles = Table(
    "rbac_user_roles",
    metadata,
    Column("user_id", String(36), ForeignKey("rbac_users.id", ondelete="CASCADE"), nullable=False),
    Column("role_id", Integer, ForeignKey("rbac_roles.id", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("user_id", "role_id"),
    Index(None, "role_id"),
)

# Directory groups known to RBAC (PE's "user groups"): their members get their roles.
rbac_groups = Table(
    "rbac_groups",
    metadata,
    Column("id", String(36), nullable=False),
    Column("login", String(255), nullable=False),  # the directory group's name
    Column("display_name", String(255), nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("login"),
)

rbac_group_roles = Table(
    "rbac_group_roles",
    metadata,
    Column(
        "group_id", String(36), ForeignKey("rbac_groups.id", ondelete="CASCADE"), nullable=False
    ),
    Column("role_id", Integer, ForeignKey("rbac_roles.id", ondelete="CASCADE"), nullable=False),
    PrimaryKeyConstraint("group_id", "role_id"),
    Index(None, "role_id"),
)

rbac_tokens = Table(
    "rbac_tokens",
    metadata,
    Column("digest", String(64), nullable=False),  # SHA-256 of the token, hex
    Column("id", String(36), nullable=False),  # what listings and revocations name
    Column("user_id", String(36), ForeignKey("rbac_users.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(255), nullable=False),
    Column("client", String(255), nullable=False),  # the address it was created from
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    PrimaryKeyConstraint("digest"),
    UniqueConstraint("id"),
    Index(None, "user_id"),
    Index(None, "expires_at"),
)

# Append-only: the code has no statement that changes or deletes a row.
activity_events = Table(
    "activity_events",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("timestamp", UTCDateTime(), nullable=False),
    Column("service", String(32), nullable=False),  # rbac | orchestrator | classifier | ca
    Column("type", String(64), nullable=False),  # login, login_failed, create, stop, ...
    Column("subject_id", String(255), nullable=True),
    Column("subject_name", String(255), nullable=False),
    Column("object_type", String(64), nullable=False),
    Column("object_id", String(255), nullable=False),
    Column("object_name", String(255), nullable=False),
    Column("message", Text, nullable=False),
    Column("address", String(64), nullable=True),
    Index(None, "timestamp"),
    Index(None, "subject_name", "id"),
    Index(None, "object_type", "object_id", "id"),
    Index(None, "service", "id"),
    sqlite_autoincrement=True,
)

# Puppet runs (podium.inventory.reports): a report a row, its resource events in rows of
# their own, its metrics and logs as documents. Reports are history, kept whatever their
# order; a node's latest is the one ``nodes.latest_report_hash`` names.
reports = Table(
    "reports",
    metadata,
    Column("id", BigID, primary_key=True, autoincrement=True),
    Column("hash", String(40), nullable=False),  # SHA-1 of the report's canonical JSON
    Column(
        "certname",
        String(255),
        ForeignKey("nodes.certname", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("environment", String(255), nullable=False),
    Column("status", String(255), nullable=True),
    Column("noop", Boolean, nullable=True),
    Column("noop_pending", Boolean, nullable=True),
    Column("corrective_change", Boolean, nullable=True),
    Column("puppet_version", String(255), nullable=False),
    Column("report_format", Integer, nullable=False),
    Column("configuration_version", Text, nullable=False),
    Column("start_time", UTCDateTime(), nullable=False),
    Column("end_time", UTCDateTime(), nullable=False),
    Column("producer_timestamp", UTCDateTime(), nullable=False),
    Column("receive_time", UTCDateTime(), nullable=False),
    Column("producer", String(255), nullable=True),
    Column("transaction_uuid", String(255), nullable=True),
    Column("catalog_uuid", String(255), nullable=True),
    Column("code_id", Text, nullable=True),
    Column("job_id", String(255), nullable=True),
    Column("cached_catalog_status", String(255), nullable=True),
    Column("type", String(16), nullable=False),  # agent | plan
    Column("metrics", JSONDocument, nullable=False),  # [{category, name, value}]
    Column("logs", JSONDocument, nullable=False),  # [{file, line, level, message, ...}]
    UniqueConstraint("hash"),
    Index(None, "certname", "producer_timestamp"),
    Index(None, "producer_timestamp"),
    Index(None, "job_id"),
    sqlite_autoincrement=True,
)

# A report's resource events in the report's order (PuppetDB's events entity). No index
# on titles: an exec's title can be longer than a PostgreSQL index entry may be.
resource_events = Table(
    "resource_events",
    metadata,
    Column("report_id", BigID, ForeignKey("reports.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("certname", String(255), nullable=False),
    Column("status", String(255), nullable=True),  # success failure noop skipped
    Column("timestamp", UTCDateTime(), nullable=False),
    Column("resource_type", Text, nullable=False),
    Column("resource_title", Text, nullable=False),
    Column("property", Text, nullable=True),
    Column("name", Text, nullable=True),
    Column("new_value", Text, nullable=True),  # a string, or the JSON of another value
    Column("old_value", Text, nullable=True),
    Column("message", Text, nullable=True),
    Column("file", Text, nullable=True),
    Column("line", Integer, nullable=True),
    Column("containment_path", JSONDocument, nullable=True),  # ["Stage[main]", "Main", ...]
    Column("containing_class", Text, nullable=True),
    Column("corrective_change", Boolean, nullable=True),
    PrimaryKeyConstraint("report_id", "seq"),
    Index(None, "certname"),
    Index(None, "resource_type"),
)

# Each node's latest catalog (a newer one replaces it), its resources and their edges.
catalogs = Table(
    "catalogs",
    metadata,
    Column(
        "certname",
        String(255),
        ForeignKey("nodes.certname", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("hash", String(40), nullable=False),  # SHA-1 of resources and edges
    Column("version", Text, nullable=False),
    Column("environment", String(255), nullable=True),
    Column("transaction_uuid", String(255), nullable=True),
    Column("catalog_uuid", String(255), nullable=True),
    Column("code_id", Text, nullable=True),
    Column("job_id", String(255), nullable=True),
    Column("producer_timestamp", UTCDateTime(), nullable=False),
    Column("producer", String(255), nullable=True),
    Column("received", UTCDateTime(), nullable=False),  # the node's catalog_timestamp
    PrimaryKeyConstraint("certname"),
)

catalog_resources = Table(
    "catalog_resources",
    metadata,
    Column(
        "certname",
        String(255),
        ForeignKey("catalogs.certname", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("type", Text, nullable=False),  # File, Service, Class, Apache::Vhost
    Column("title", Text, nullable=False),
    Column("resource", String(40), nullable=False),  # SHA-1 of type, title and parameters
    Column("exported", Boolean, nullable=False),
    Column("file", Text, nullable=True),
    Column("line", Integer, nullable=True),
    Column("tags", JSONDocument, nullable=False),  # lower case
    Column("parameters", JSONDocument, nullable=False),
    PrimaryKeyConstraint("certname", "type", "title"),
    Index(None, "type", "title"),
)

catalog_edges = Table(
    "catalog_edges",
    metadata,
    Column(
        "certname",
        String(255),
        ForeignKey("catalogs.certname", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("source_type", Text, nullable=False),
    Column("source_title", Text, nullable=False),
    Column("target_type", Text, nullable=False),
    Column("target_title", Text, nullable=False),
    Column("relationship", String(32), nullable=False),
    Index(None, "certname"),
)
