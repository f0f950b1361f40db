"""The child rows a report or catalog carries in its answer, as one JSON array each.

PuppetDB returns a report's ``resource_events`` and a catalog's ``resources`` and
``edges`` inline (``{"href", "data": [...]}``). Each ``data`` is made by the database,
a correlated subquery per row returned, as JSON text: rows of thousands of events need
no work in Python. SQLite has no booleans in JSON and loses a value's JSON-ness through
a subquery, so the values are wrapped there (:func:`_sqlite_value`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Text,
    case,
    cast,
    func,
    literal_column,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from podium.store.tables import catalog_edges, catalog_resources, resource_events

Iso = Callable[[ColumnElement[Any]], ColumnElement[Any]]
# name in the answer, column, how it is written: "text", "time", "flag" or "json"
Pairs = Sequence[tuple[str, ColumnElement[Any], str]]


def report_events(dialect: str, report: FromClause, iso: Iso) -> ColumnElement[Any]:
    """The JSON array of a report's events, in the report's order."""
    e = resource_events.alias()
    pairs: Pairs = [
        ("status", e.c.status, "text"),
        ("timestamp", e.c.timestamp, "time"),
        ("resource_type", e.c.resource_type, "text"),
        ("resource_title", e.c.resource_title, "text"),
        ("property", e.c.property, "text"),
        ("corrective_change", e.c.corrective_change, "flag"),
        ("new_value", e.c.new_value, "text"),
        ("old_value", e.c.old_value, "text"),
        ("message", e.c.message, "text"),
        ("file", e.c.file, "text"),
        ("line", e.c.line, "text"),
        ("containment_path", e.c.containment_path, "json"),
        ("containing_class", e.c.containing_class, "text"),
        ("name", e.c.name, "text"),
    ]
    return _array(dialect, report, pairs, e.c.report_id == report.c.id, [e.c.seq], iso)


def catalog_resources_json(dialect: str, catalog: FromClause, iso: Iso) -> ColumnElement[Any]:
    """The JSON array of a catalog's resources, by type and title."""
    r = catalog_resources.alias()
    pairs: Pairs = [
        ("certname", r.c.certname, "text"),
        ("resource", r.c.resource, "text"),
        ("type", r.c.type, "text"),
        ("title", r.c.title, "text"),
        ("exported", r.c.exported, "flag"),
        ("tags", r.c.tags, "json"),
        ("file", r.c.file, "text"),
        ("line", r.c.line, "text"),
        ("parameters", r.c.parameters, "json"),
    ]
    where = r.c.certname == catalog.c.certname
    return _array(dialect, catalog, pairs, where, [r.c.type, r.c.title], iso)


def catalog_edges_json(dialect: str, catalog: FromClause, iso: Iso) -> ColumnElement[Any]:
    """The JSON array of a catalog's edges."""
    g = catalog_edges.alias()
    pairs: Pairs = [
        ("relationship", g.c.relationship, "text"),
        ("source_title", g.c.source_title, "text"),
        ("source_type", g.c.source_type, "text"),
        ("target_title", g.c.target_title, "text"),
        ("target_type", g.c.target_type, "text"),
    ]
    order = [g.c.source_type, g.c.source_title, g.c.relationship, g.c.target_type, g.c.target_title]
    return _array(dialect, catalog, pairs, g.c.certname == catalog.c.certname, order, iso)


def _array(
    dialect: str,
    outer: FromClause,
    pairs: Pairs,
    where: ColumnElement[bool],
    order: Sequence[ColumnElement[Any]],
    iso: Iso,
) -> ColumnElement[Any]:
    arguments: list[ColumnElement[Any]] = []
    for name, column, how in pairs:
        arguments.append(literal_column(f"'{name}'"))
        if how == "time":
            arguments.append(iso(column))
        elif dialect == "sqlite":
            arguments.append(_sqlite_value(column, how))
        else:
            arguments.append(column)
    if dialect == "postgresql":
        rows = func.json_agg(aggregate_order_by(func.json_build_object(*arguments), *order))
        whole = func.coalesce(rows, literal_column("'[]'::json"))
        return select(cast(whole, Text)).where(where).correlate(outer).scalar_subquery()
    inner = select(func.json_object(*arguments).label("o")).where(where).order_by(*order)
    listed = inner.correlate(outer).subquery()
    return select(func.json_group_array(func.json(listed.c.o))).scalar_subquery()


def _sqlite_value(column: ColumnElement[Any], how: str) -> ColumnElement[Any]:
    if how == "flag":  # stored as 0 or 1
        word = case((column.is_(None), "null"), (column == 1, "true"), else_="false")
        return func.json(word)
    if how == "json":  # stored as JSON text; json(NULL) is NULL
        return func.json(type_coerce(column, Text))
    return column
