"""PuppetDB's query engine over the inventory: AST in, rows out.

    rows, total = run_query(store, ["from", "nodes", ["~", "certname", "^web"]])
    rows, _ = run_query(store, "facts", query=["=", "name", "os"], limit=10)
    rows, _ = event_counts(store, ["=", "latest_report?", True], summarize_by="certname")

A query is validated into a :mod:`~.tree` (:mod:`.validate`), its wildcard paths are
matched against the fact paths the database knows, and :mod:`.compiler` makes one
SQL statement of it. PQL text is the parser's (:func:`podium.inventory.pql.parse_pql`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from podium.inventory.facts import decode_path
from podium.inventory.query import tree as T
from podium.inventory.query.checks import with_paging
from podium.inventory.query.compiler import compile_query
from podium.inventory.query.counts import aggregate_event_counts, event_counts
from podium.inventory.query.decode import row_decoder
from podium.inventory.query.errors import QUERY_ERROR, QueryError
from podium.inventory.query.fields import ENTITIES
from podium.inventory.query.paths import Pattern
from podium.inventory.query.validate import parse_query
from podium.store.tables import fact_paths

if TYPE_CHECKING:  # the store imports this package's paths: no cycle at import time
    from podium.inventory.store import InventoryStore
    from podium.store import Store

__all__ = [
    "ENTITIES",
    "QUERY_ERROR",
    "QueryError",
    "aggregate_event_counts",
    "event_counts",
    "parse_query",
    "run_query",
]


def run_query(
    store: Store | InventoryStore,
    entity_or_ast: str | list[Any],
    *,
    query: Any = None,
    limit: int | str | None = None,
    offset: int | str | None = 0,
    order_by: Any = None,
    include_total: bool = False,
    raw: bool = False,
) -> tuple[list[dict[str, Any]], int | None]:
    """The rows of a query, and with ``include_total`` how many there are in all.

    ``entity_or_ast`` is an entity (``"nodes"``; ``query`` is then its filter or
    ``extract``, as an entity endpoint's ``query`` parameter is) or a whole query
    (``["from", entity, ...]``, as the root endpoint takes). ``limit``, ``offset`` and
    ``order_by`` are the URL parameters' paging. With ``raw``, JSON the database holds
    as text comes back as :class:`orjson.Fragment` rather than parsed.
    """
    from podium.inventory.store import InventoryStore

    inventory = InventoryStore.of(store)
    if isinstance(entity_or_ast, str):
        parsed = parse_query(query, entity_or_ast)
    elif query is not None:
        raise QueryError("give either an entity and its query, or a whole query, not both")
    else:
        parsed = parse_query(entity_or_ast)
    parsed = with_paging(parsed, limit=limit, offset=offset or None, order_by=order_by)
    with inventory.read() as connection:
        resolved = _resolve(connection, parsed)
        compiled = compile_query(parsed, dialect=inventory.dialect, resolved=resolved)
        rows = connection.execute(compiled.select).all()
        total = connection.execute(compiled.count).scalar_one() if include_total else None
    decode = row_decoder(compiled.decoders, raw=raw)
    return [decode(row) for row in rows], total


def _resolve(connection: Connection, query: T.Query) -> dict[Pattern, list[int]]:
    """The fact path ids each wildcard pattern of ``query`` matches."""
    resolved: dict[Pattern, list[int]] = {}
    for pattern in _patterns(query):
        if pattern in resolved or pattern.exact is not None:
            continue
        candidates = select(fact_paths.c.id, fact_paths.c.path)
        if pattern.name is not None:
            candidates = candidates.where(fact_paths.c.name == pattern.name)
        resolved[pattern] = [
            path_id
            for path_id, path in connection.execute(candidates)
            if pattern.matches(decode_path(path))
        ]
    return resolved


def _patterns(query: T.Query) -> Iterator[Pattern]:
    stack: list[T.Expr] = [query.where] if query.where is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, T.And | T.Or):
            stack.extend(node.items)
        elif isinstance(node, T.Not):
            stack.append(node.item)
        elif isinstance(node, T.InQuery):
            if node.query.where is not None:
                stack.append(node.query.where)
        elif isinstance(node, T.PathIs):
            if node.pattern is not None:
                yield node.pattern
        elif not isinstance(node, T.NodeState) and node.field.pattern is not None:
            yield node.field.pattern
