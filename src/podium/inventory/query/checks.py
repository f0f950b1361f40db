"""Checks of a query's values and paging against the fields they apply to (pure)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from podium.inventory.query import fields as F
from podium.inventory.query import tree as T
from podium.inventory.query.errors import QueryError

MAX_LIMIT: Final = 1_000_000


def with_paging(
    query: T.Query,
    *,
    limit: int | str | None = None,
    offset: int | str | None = None,
    order_by: Any = None,
) -> T.Query:
    """``query`` with the paging of an endpoint's URL parameters (PuppetDB's shape for
    ``order_by``: ``[{"field": f, "order": "desc"}]``; the AST's shape works too)."""
    changes: dict[str, Any] = {}
    if limit is not None:
        changes["limit"] = check_limit(limit)
    if offset is not None:
        changes["offset"] = check_offset(offset)
    if order_by is not None:
        changes["order_by"] = check_order_by(query, order_by)
    for key in changes:
        given = getattr(query, key)
        if given not in (None, 0, ()):
            raise QueryError(f"{key} is given twice, in the query and as a parameter: keep one")
    return replace(query, **changes)


def check_size(ast: Any, *, max_depth: int, max_nodes: int) -> None:
    """Refuse a query too big or too deep before looking at it."""
    stack: list[tuple[Any, int]] = [(ast, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > max_nodes:
            raise QueryError(f"the query has more than {max_nodes} terms: split it up")
        if depth > max_depth:
            raise QueryError(f"the query nests deeper than {max_depth} levels")
        if isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, dict):
            stack.extend((item, depth + 1) for item in node.values())


def is_function(node: Any) -> bool:
    return isinstance(node, list) and node[:1] == ["function"]


def kind_of(entity: F.Entity, ref: T.Ref) -> str:
    if ref.pattern is not None:
        return "multi"
    return entity.fields[ref.name].kind


def item_kind(query: T.Query, item: T.Item) -> str:
    if isinstance(item, T.Function):
        return "number"
    return kind_of(query.entity, item.ref)


def value(entity: F.Entity, ref: T.Ref, kind: str, op: str, value: Any) -> Any:
    """``value`` checked against the field's type (timestamps parsed)."""
    where = f"{ref.label} ({entity.name})"
    if isinstance(value, dict | list):
        raise QueryError(f"{where} is compared with a string, number or boolean, not {value!r}")
    if value is None:
        raise QueryError(f'{where}: compare with null through ["null?", "{ref.label}", true]')
    ordered = op in ("<", "<=", ">", ">=")
    if kind == "multi":
        if ordered and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise QueryError(
                f"Argument {value!r} and operator {op} have incompatible types: {ref.label} is "
                "ordered only as a number (a string fact is never less or greater than a value)"
            )
        return value
    if kind == "string" or kind == "type" or kind == "array":
        if not isinstance(value, str):
            raise QueryError(f"{where} is a string: compare it with a string, not {value!r}")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise QueryError(f"{where} is true or false, not {value!r}")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise QueryError(
                f'Argument "{value}" is incompatible with numeric field "{ref.label}".'
            )
        return value
    if kind == "timestamp":
        return parse_timestamp(value, ref.label)
    raise QueryError(f"{where} cannot be compared")


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def parse_timestamp(value: Any, label: str = "timestamp") -> datetime:
    """An ISO-8601 time (UTC when it names no zone, as PuppetDB takes it)."""
    if not isinstance(value, str) or not _ISO.match(value):
        raise QueryError(f"'{value}' is not a valid timestamp value for {label} (ISO-8601)")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise QueryError(f"'{value}' is not a valid timestamp value for {label}: {error}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_limit(value: Any) -> int:
    number = _integer(value)
    if number is None or number <= 0 or number > MAX_LIMIT:
        raise QueryError(
            f"Illegal value '{value}' for :limit; expected a positive non-zero integer "
            f"(at most {MAX_LIMIT})"
        )
    return number


def check_offset(value: Any) -> int:
    number = _integer(value)
    if number is None or number < 0 or number > _MAX_OFFSET:
        raise QueryError(
            f"Illegal value '{value}' for :offset; expected a non-negative integer of at "
            f"most {_MAX_OFFSET}"
        )
    return number


_MAX_OFFSET = 2**63 - 1


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    digits = value.strip().lstrip("-") if isinstance(value, str) else ""
    if digits.isascii() and digits.isdigit():
        return int(value)
    return None


def check_order_by(query: T.Query, clauses: Any) -> tuple[tuple[str, bool], ...]:
    if not isinstance(clauses, list):
        raise QueryError(f"Illegal value '{clauses}' for :order_by; expected an array")
    out: list[tuple[str, bool]] = []
    labels = query.labels
    grouped = bool(query.group_by) or any(isinstance(i, T.Function) for i in query.extract or ())
    if not grouped:  # rows may be ordered by any field, returned or not
        labels = (*labels, *(n for n in query.entity.returned if n not in labels))
    for clause in clauses:
        if isinstance(clause, dict):  # the URL parameter's shape
            unknown = set(clause) - {"field", "order"}
            if unknown:
                raise QueryError(
                    f"Illegal value '{clause}' in :order_by; unknown key '{min(unknown)}'."
                )
            if "field" not in clause:
                raise QueryError(
                    f"Illegal value '{clause}' in :order_by; missing required key 'field'."
                )
            name, order = clause["field"], clause.get("order", "asc")
        elif isinstance(clause, list) and len(clause) == 2:
            name, order = clause
        else:
            name, order = clause, "asc"
        if not isinstance(order, str) or order.lower() not in ("asc", "desc"):
            raise QueryError(
                f"Illegal value '{clause}' in :order_by; 'order' must be either 'asc' or 'desc'"
            )
        if not isinstance(name, str) or name not in labels:
            raise QueryError(
                f"Unrecognized column '{name}' specified in :order_by; Supported columns are "
                f"'{', '.join(labels)}'"
            )
        kind = _label_kind(query, name)
        if kind not in F.ORDERABLE:
            raise QueryError(f"cannot order by {name}: it is a whole document")
        out.append((name, order.lower() == "desc"))
    return tuple(out)


def _label_kind(query: T.Query, label: str) -> str:
    if query.extract is not None:
        for item in query.extract:
            if item.label == label:
                return item_kind(query, item)
    return query.entity.fields[label].kind
