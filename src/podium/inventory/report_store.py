"""Reports and catalogs into the inventory's tables, a batch in a handful of statements.

:meth:`InventoryStore.store_reports` and :meth:`InventoryStore.replace_catalogs` call
these inside their write transaction (one a batch). As for facts, every bulk statement
takes its rows as one JSON parameter that the database takes apart (``json_each`` on
SQLite, ``json_populate_recordset`` on PostgreSQL): one statement a table, whatever the
batch's size.

- A report is history: it is stored whatever its age, once (a report whose hash is
  stored already changes nothing). The newest agent report of a node (by
  ``producer_timestamp``) is its latest: the node's ``latest_report_*``,
  ``report_timestamp`` (the run's end), ``report_environment`` and
  ``cached_catalog_status`` are copied from it.
- A catalog replaces the node's catalog unless the stored one is newer (by
  ``producer_timestamp``); resources and edges are rewritten only when their hash
  changed. The node's ``catalog_timestamp`` is when the catalog was received.
- A report or catalog for a certname the inventory does not know adds the node (without
  facts), and one newer than a node's deactivation reactivates it, as PuppetDB does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy import Connection, select

from podium.inventory.reports import Catalog, Event, Report, log_document, metric_document
from podium.inventory.store import COVERING
from podium.store.tables import catalogs, nodes, reports

_CHUNK: Final = 500  # names per IN (...) list, reports or catalogs per statement
_ROWS: Final = 5_000  # events, resources or edges per statement

_REPORT_COLUMNS: Final = (
    "hash",
    "certname",
    "environment",
    "status",
    "noop",
    "noop_pending",
    "corrective_change",
    "puppet_version",
    "report_format",
    "configuration_version",
    "start_time",
    "end_time",
    "producer_timestamp",
    "receive_time",
    "producer",
    "transaction_uuid",
    "catalog_uuid",
    "code_id",
    "job_id",
    "cached_catalog_status",
    "type",
    "metrics",
    "logs",
)
_EVENT_COLUMNS: Final = (
    "report_id",
    "seq",
    "certname",
    "status",
    "timestamp",
    "resource_type",
    "resource_title",
    "property",
    "name",
    "new_value",
    "old_value",
    "message",
    "file",
    "line",
    "containment_path",
    "containing_class",
    "corrective_change",
)
_LATEST_COLUMNS: Final = (
    "certname",
    "latest_report_hash",
    "latest_report_status",
    "latest_report_noop",
    "latest_report_noop_pending",
    "latest_report_corrective_change",
    "latest_report_job_id",
    "report_timestamp",
    "report_environment",
    "cached_catalog_status",
)
_CATALOG_COLUMNS: Final = (
    "certname",
    "hash",
    "version",
    "environment",
    "transaction_uuid",
    "catalog_uuid",
    "code_id",
    "job_id",
    "producer_timestamp",
    "producer",
    "received",
)
_RESOURCE_COLUMNS: Final = (
    "certname",
    "type",
    "title",
    "resource",
    "exported",
    "file",
    "line",
    "tags",
    "parameters",
)
_CATALOG_NODE_COLUMNS: Final = ("certname", "catalog_timestamp", "catalog_environment")
_NEW_NODE_COLUMNS: Final = ("certname", "facts", "first_seen", "last_seen")
_EDGE_COLUMNS: Final = (
    "certname",
    "source_type",
    "source_title",
    "target_type",
    "target_title",
    "relationship",
)


def write_reports(
    connection: Connection, dialect: str, batch: Sequence[Report], received: datetime
) -> list[bool]:
    """Store ``batch``; for each report, whether it was stored (False: it was already)."""
    first: dict[str, int] = {}
    for index, report in enumerate(batch):
        first.setdefault(report.hash, index)
    known: set[str] = set()
    for chunk in _chunks(sorted(first)):
        found = connection.execute(select(reports.c.hash).where(reports.c.hash.in_(chunk)))
        known.update(found.scalars())
    fresh = [batch[i] for h, i in sorted(first.items(), key=lambda item: item[1]) if h not in known]
    stored = {report.hash for report in fresh}
    if not fresh:
        return [False] * len(batch)
    sql = _Statements(dialect)
    _ensure_nodes(connection, sql, {r.certname: r.producer_timestamp for r in fresh}, received)
    rows = [_report_row(report, received) for report in fresh]
    ids: dict[str, int] = {}
    for chunk in _chunks(rows):
        inserted = connection.exec_driver_sql(
            sql.sql["insert_reports"],
            (sql.encode(_REPORT_COLUMNS, chunk),),
        )
        ids.update((digest, report_id) for report_id, digest in inserted.fetchall())
    events = [
        _event_row(ids[report.hash], seq, report, event)
        for report in fresh
        for seq, event in enumerate(report.events)
    ]
    for chunk in _chunks(events, _ROWS):
        connection.exec_driver_sql(
            sql.sql["insert_events"],
            (sql.encode(_EVENT_COLUMNS, chunk),),
        )
    _update_latest(connection, sql, fresh)
    return [report.hash in stored and first[report.hash] == i for i, report in enumerate(batch)]


def _update_latest(connection: Connection, sql: _Statements, fresh: Sequence[Report]) -> None:
    """Make each node's newest agent report its latest, unless a newer one is stored."""
    newest: dict[str, Report] = {}
    for report in fresh:
        seen = newest.get(report.certname)
        if report.type == "agent" and (
            seen is None or report.producer_timestamp > seen.producer_timestamp
        ):
            newest[report.certname] = report
    current: dict[str, datetime] = {}
    joined = nodes.join(reports, reports.c.hash == nodes.c.latest_report_hash)
    for chunk in _chunks(sorted(newest)):
        query = select(nodes.c.certname, reports.c.producer_timestamp).select_from(joined)
        query = query.where(nodes.c.certname.in_(chunk)).with_hint(nodes, COVERING, "sqlite")
        current.update((name, at) for name, at in connection.execute(query))
    rows = [
        (
            name,
            report.hash,
            report.status,
            report.noop,
            report.noop_pending,
            report.corrective_change,
            report.job_id,
            report.end_time,
            report.environment,
            report.cached_catalog_status,
        )
        for name, report in sorted(newest.items())
        if name not in current or report.producer_timestamp > current[name]
    ]
    for chunk in _chunks(rows):
        connection.exec_driver_sql(sql.sql["update_latest"], (sql.encode(_LATEST_COLUMNS, chunk),))


def write_catalogs(
    connection: Connection, dialect: str, batch: Sequence[Catalog], received: datetime
) -> list[bool]:
    """Store ``batch``; for each catalog, whether it replaced the node's (False: stale,
    a newer one is stored or comes later in the batch)."""
    newest: dict[str, int] = {}
    for index, catalog in enumerate(batch):
        seen = newest.get(catalog.certname)
        if seen is None or batch[seen].producer_timestamp <= catalog.producer_timestamp:
            newest[catalog.certname] = index
    stored: dict[str, tuple[datetime, str]] = {}
    for chunk in _chunks(sorted(newest)):
        query = select(catalogs.c.certname, catalogs.c.producer_timestamp, catalogs.c.hash)
        for name, at, digest in connection.execute(query.where(catalogs.c.certname.in_(chunk))):
            stored[name] = (at, digest)
    accepted = [
        batch[index]
        for name, index in sorted(newest.items())
        if name not in stored or stored[name][0] <= batch[index].producer_timestamp
    ]
    taken = {id(catalog) for catalog in accepted}
    if not accepted:
        return [False] * len(batch)
    sql = _Statements(dialect)
    _ensure_nodes(connection, sql, {c.certname: c.producer_timestamp for c in accepted}, received)
    rows = [_catalog_row(catalog, received) for catalog in accepted]
    for chunk in _chunks(rows):
        connection.exec_driver_sql(
            sql.sql["upsert_catalogs"],
            (sql.encode(_CATALOG_COLUMNS, chunk),),
        )
    changed = [c for c in accepted if c.certname not in stored or stored[c.certname][1] != c.hash]
    replaced = [(c.certname,) for c in changed if c.certname in stored]
    for chunk in _chunks(replaced):
        for statement in ("delete_resources", "delete_edges"):
            connection.exec_driver_sql(sql.sql[statement], (sql.encode(("certname",), chunk),))
    resources = [
        (
            c.certname,
            r.type,
            r.title,
            r.resource,
            r.exported,
            r.file,
            r.line,
            list(r.tags),
            r.parameters,
        )
        for c in changed
        for r in c.resources
    ]
    for chunk in _chunks(resources, _ROWS):
        connection.exec_driver_sql(
            sql.sql["insert_resources"],
            (sql.encode(_RESOURCE_COLUMNS, chunk),),
        )
    edges = [
        (c.certname, e.source_type, e.source_title, e.target_type, e.target_title, e.relationship)
        for c in changed
        for e in c.edges
    ]
    for chunk in _chunks(edges, _ROWS):
        connection.exec_driver_sql(sql.sql["insert_edges"], (sql.encode(_EDGE_COLUMNS, chunk),))
    timestamps = [(c.certname, received, c.environment) for c in accepted]
    for chunk in _chunks(timestamps):
        connection.exec_driver_sql(
            sql.sql["update_catalog_nodes"], (sql.encode(_CATALOG_NODE_COLUMNS, chunk),)
        )
    return [id(catalog) in taken for catalog in batch]


def _ensure_nodes(
    connection: Connection, sql: _Statements, seen: Mapping[str, datetime], received: datetime
) -> None:
    """Add the nodes the inventory does not know, and reactivate those deactivated (or
    expired) before what was just heard of them."""
    rows: list[tuple[Any, ...]] = [(name, {}, received, received) for name in sorted(seen)]
    for chunk in _chunks(rows):
        connection.exec_driver_sql(sql.sql["add_nodes"], (sql.encode(_NEW_NODE_COLUMNS, chunk),))
    heard = [(name, at) for name, at in sorted(seen.items())]
    for chunk in _chunks(heard):
        connection.exec_driver_sql(
            sql.sql["reactivate"], (sql.encode(("certname", "deactivated"), chunk),)
        )


def _report_row(report: Report, received: datetime) -> tuple[Any, ...]:
    return (
        report.hash,
        report.certname,
        report.environment,
        report.status,
        report.noop,
        report.noop_pending,
        report.corrective_change,
        report.puppet_version,
        report.report_format,
        report.configuration_version,
        report.start_time,
        report.end_time,
        report.producer_timestamp,
        received,
        report.producer,
        report.transaction_uuid,
        report.catalog_uuid,
        report.code_id,
        report.job_id,
        report.cached_catalog_status,
        report.type,
        [metric_document(m) for m in report.metrics],
        [log_document(entry) for entry in report.logs],
    )


def _event_row(report_id: int, seq: int, report: Report, event: Event) -> tuple[Any, ...]:
    return (
        report_id,
        seq,
        report.certname,
        event.status,
        event.timestamp,
        event.resource_type,
        event.resource_title,
        event.property,
        event.name,
        event.new_value,
        event.old_value,
        event.message,
        event.file,
        event.line,
        None if event.containment_path is None else list(event.containment_path),
        event.containing_class,
        event.corrective_change,
    )


def _catalog_row(catalog: Catalog, received: datetime) -> tuple[Any, ...]:
    return (
        catalog.certname,
        catalog.hash,
        catalog.version,
        catalog.environment,
        catalog.transaction_uuid,
        catalog.catalog_uuid,
        catalog.code_id,
        catalog.job_id,
        catalog.producer_timestamp,
        catalog.producer,
        received,
    )


class _Statements:
    """The bulk statements of one dialect (``_SQL``) and the parameter they take."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.sql = _SQL[dialect]

    def encode(self, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        """The rows as the statement's parameter: objects for PostgreSQL's row types,
        arrays for SQLite's ``json_each``; times as each database reads them."""
        timed = [
            [_time(v, self.dialect) if isinstance(v, datetime) else v for v in r] for r in rows
        ]
        if self.dialect == "postgresql":
            return orjson.dumps([dict(zip(names, row, strict=True)) for row in timed]).decode()
        return orjson.dumps(timed).decode()


def _statements(dialect: str) -> dict[str, str]:
    """Each statement takes its rows as one JSON parameter. The names in them are this
    module's constants; every value is in the parameter."""

    def rows(table: str, names: Sequence[str]) -> str:
        if dialect == "postgresql":
            columns = ", ".join(f'"{n}"' for n in names)
            source = f"json_populate_recordset(NULL::{table}, %s::json)"
            return " ".join(["SELECT", columns, "FROM", source])
        picked = ", ".join(f'value->>{i} AS "{n}"' for i, n in enumerate(names))
        return " ".join(["SELECT", picked, "FROM json_each(?) WHERE true"])

    def insert(table: str, names: Sequence[str], tail: str = "") -> str:
        columns = ", ".join(f'"{n}"' for n in names)
        return " ".join(["INSERT INTO", table, f"({columns})", rows(table, names), tail])

    def update(table: str, names: Sequence[str]) -> str:
        sets = ", ".join(f'"{n}" = v."{n}"' for n in names if n != "certname")
        source = f"({rows(table, names)}) AS v"
        where = f"WHERE {table}.certname = v.certname"
        return " ".join(["UPDATE", table, "SET", sets, "FROM", source, where])

    def delete(table: str) -> str:
        return " ".join(
            ["DELETE FROM", table, "WHERE certname IN", f"({rows(table, ('certname',))})"]
        )

    catalog_sets = ", ".join(f'"{n}" = excluded."{n}"' for n in _CATALOG_COLUMNS[1:])
    cleared = "CASE WHEN nodes.{0} < v.deactivated THEN NULL ELSE nodes.{0} END"
    heard = f"({rows('nodes', ('certname', 'deactivated'))}) AS v"
    return {
        "insert_reports": insert("reports", _REPORT_COLUMNS, "RETURNING id, hash"),
        "insert_events": insert("resource_events", _EVENT_COLUMNS),
        "update_latest": update("nodes", _LATEST_COLUMNS),
        "upsert_catalogs": insert(
            "catalogs", _CATALOG_COLUMNS, f"ON CONFLICT (certname) DO UPDATE SET {catalog_sets}"
        ),
        "delete_resources": delete("catalog_resources"),
        "delete_edges": delete("catalog_edges"),
        "insert_resources": insert("catalog_resources", _RESOURCE_COLUMNS),
        "insert_edges": insert("catalog_edges", _EDGE_COLUMNS),
        "update_catalog_nodes": update("nodes", _CATALOG_NODE_COLUMNS),
        "add_nodes": insert("nodes", _NEW_NODE_COLUMNS, "ON CONFLICT (certname) DO NOTHING"),
        "reactivate": " ".join(
            [
                "UPDATE nodes SET",
                f"deactivated = {cleared.format('deactivated')},",
                f"expired = {cleared.format('expired')}",
                "FROM",
                heard,
                "WHERE nodes.certname = v.certname",
                "AND (nodes.deactivated IS NOT NULL OR nodes.expired IS NOT NULL)",
            ]
        ),
    }


def _time(at: datetime, dialect: str) -> str:
    utc = at.astimezone(UTC)
    if dialect == "postgresql":
        return utc.isoformat()
    return utc.replace(tzinfo=None).isoformat(" ", "microseconds")  # as UTCDateTime stores


_SQL: Final = {dialect: _statements(dialect) for dialect in ("sqlite", "postgresql")}


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
