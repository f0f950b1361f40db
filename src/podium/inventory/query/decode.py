"""The columns behind each returned field, and how a row's values become the answer's.

JSON the database already holds as text (documents, paths, structured values) is not
parsed and serialised again: with ``raw`` it stays an :class:`orjson.Fragment` that
the HTTP layer writes as it is; otherwise it is parsed into Python values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, case, func, literal

from podium.inventory.facts import CONTAINERS, FactType, value_of
from podium.inventory.query import tree as T
from podium.inventory.query.fields import Entity
from podium.inventory.query.source import TYPE_LABELS, Source

Convert = Callable[[Sequence[Any], bool], Any]


@dataclass
class Decoder:
    """One returned field: its SQL columns and how their values read."""

    label: str
    kind: str
    columns: list[ColumnElement[Any]]
    convert: Convert
    function: bool = False

    @property
    def width(self) -> int:
        return len(self.columns)


def decoder(source: Source, item: T.Item, entity: Entity) -> Decoder:
    if isinstance(item, T.Function):
        return _function(source, item, entity)
    ref = item.ref
    if ref.pattern is not None:
        assert ref.pattern.exact is not None
        return Decoder(item.label, "json", [source.subtree(ref.pattern.exact)], _json)
    kind = entity.fields[ref.name].kind
    if kind == "multi":
        return Decoder(item.label, kind, source.value(structured=True), _value)
    if kind == "path":
        return Decoder(item.label, kind, [source.key("path")], _json)
    if kind == "type":
        return Decoder(item.label, kind, [source.type_label()], _first)
    if kind == "timestamp":
        return Decoder(item.label, kind, [source.iso(source.key(ref.name))], _first)
    if kind == "array":
        return Decoder(item.label, kind, [source.text(ref.name)], _json)
    if kind == "json" and source.runs is not None:
        columns, href = source.runs.document(ref.name)
        return Decoder(item.label, kind, columns, _json if href is None else _expanded(href))
    if kind == "json":
        if ref.name == "trusted":
            return Decoder(item.label, kind, [source.subtree(("trusted",))], _json)
        if entity.name == "factsets":
            columns = [source.document(), source.certname()]
            return Decoder(item.label, kind, columns, _factset)
        return Decoder(item.label, kind, [source.document()], _json)
    return Decoder(item.label, kind, [source.key(ref.name)], _first)


def _function(source: Source, item: T.Function, entity: Entity) -> Decoder:
    if item.ref is None:
        return Decoder(item.label, "number", [func.count()], _first, function=True)
    kind = entity.fields[item.ref.name].kind
    if kind == "multi":
        numbers = source.fl.c.n
        if item.name == "count":
            counted = case((source.fp.c.type != int(FactType.NULL), literal(1)))
            return Decoder(item.label, "number", [func.count(counted)], _first, function=True)
        aggregate = getattr(func, item.name)(numbers)
        if item.name == "avg":
            return Decoder(item.label, "number", [aggregate], _float, function=True)
        # A sum, min or max of integers is an integer.
        columns = [aggregate, func.max(source.fp.c.type)]
        return Decoder(item.label, "number", columns, _number, function=True)
    column = source.key(item.ref.name)
    aggregate = getattr(func, item.name)(column)
    convert = _timestamp if kind == "timestamp" and item.name in ("min", "max") else _first
    if item.name == "avg":
        convert = _float  # PostgreSQL's avg of integers is a numeric (Decimal)
    return Decoder(
        item.label, kind if convert is _timestamp else "number", [aggregate], convert, function=True
    )


def _first(values: Sequence[Any], raw: bool) -> Any:
    return values[0]


def _json(values: Sequence[Any], raw: bool) -> Any:
    text = values[0]
    if text is None:
        return None
    return orjson.Fragment(text) if raw else orjson.loads(text)


def _value(values: Sequence[Any], raw: bool) -> Any:
    kind = FactType(values[0])
    if kind in CONTAINERS and len(values) > 3 and values[3] is not None:
        return _json(values[3:], raw)
    return value_of(kind, values[1], values[2])


def _float(values: Sequence[Any], raw: bool) -> Any:
    return None if values[0] is None else float(values[0])


def _number(values: Sequence[Any], raw: bool) -> Any:
    result, widest = values[0], values[1]
    if result is None:
        return None
    if widest == int(FactType.INTEGER) and float(result).is_integer():
        return int(result)
    return float(result)


def _timestamp(values: Sequence[Any], raw: bool) -> Any:
    value = values[0]
    if value is None:
        return None
    if isinstance(value, str):  # an aggregate's raw text on SQLite
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return iso(value)


def iso(at: datetime) -> str:
    """PuppetDB's timestamps: UTC, milliseconds, ``Z``."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _factset(values: Sequence[Any], raw: bool) -> Any:
    text, certname = values
    document = orjson.loads(text) if text else {}
    return {
        "href": f"/pdb/query/v4/factsets/{certname}/facts",
        "data": [{"name": name, "value": value} for name, value in document.items()],
    }


def _expanded(href: str) -> Convert:
    """PuppetDB's child data inline: ``{"href": <its endpoint>, "data": [...]}``."""

    def convert(values: Sequence[Any], raw: bool) -> Any:
        text, key = values
        return {"href": href.format(key), "data": _json([text or "[]"], raw)}

    return convert


def row_decoder(
    decoders: Sequence[Decoder], *, raw: bool
) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A function from a result row to the answer's dict."""
    if all(d.width == 1 and d.convert is _first for d in decoders):  # nothing to convert
        labels = [d.label for d in decoders]
        return lambda row: dict(zip(labels, row, strict=True))
    plan = []
    start = 0
    for d in decoders:
        plan.append((d.label, start, start + d.width, d.convert))
        start += d.width

    def decode(row: Sequence[Any]) -> dict[str, Any]:
        return {label: convert(row[a:b], raw) for label, a, b, convert in plan}

    return decode


__all__ = ["TYPE_LABELS", "Decoder", "decoder", "iso", "row_decoder"]
