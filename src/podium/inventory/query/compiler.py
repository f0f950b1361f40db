"""A validated query (:mod:`.tree`) → a SQLAlchemy select, and how to read its rows.

Pure: the database is not touched. Path patterns with wildcards come resolved to
fact path ids (``resolved``); everything else is SQL the database plans itself.

Every condition is two-valued: a comparison on a NULL column is false, not unknown,
so that ``not`` keeps rows SQL would drop (a node without an environment is not in
"production", so it is in ``not environment = "production"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    and_,
    false,
    func,
    literal_column,
    not_,
    or_,
    select,
    true,
    tuple_,
)

from podium.inventory.facts import EXACT_INTEGER, NUMBERS, FactType
from podium.inventory.query import tree as T
from podium.inventory.query.decode import Decoder, decoder
from podium.inventory.query.errors import QueryError
from podium.inventory.query.paths import Pattern, checked_regex
from podium.inventory.query.source import (
    TYPE_LABELS,
    Source,
    active,
    path_condition,
    under,
    value_key,
)
from podium.inventory.store import COVERING
from podium.store.tables import fact_leaves, fact_paths

_NUMERIC = [int(t) for t in NUMBERS]
_SQL_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclass
class Compiled:
    """The SQL of a query, the one counting its rows, and how to turn rows into dicts."""

    select: Select[Any]
    count: Select[Any]
    decoders: list[Decoder]


def compile_query(
    query: T.Query, *, dialect: str, resolved: Mapping[Pattern, list[int]], top: bool = True
) -> Compiled:
    """The SQL for ``query``; ``top`` applies PuppetDB's default: active nodes only."""
    return _Compiler(dialect, resolved).query(query, top=top)


class _Compiler:
    def __init__(self, dialect: str, resolved: Mapping[Pattern, list[int]]) -> None:
        self.dialect = dialect
        self.resolved = resolved

    def query(self, query: T.Query, *, top: bool) -> Compiled:
        source = Source(query.entity, self.dialect)
        where: list[ColumnElement[bool]] = list(source.conditions())
        if query.where is not None:
            where.append(self.expr(source, query.where))
        if top and query.entity.per_node and not query.states:
            where.append(self._state(source, "active"))
        items = query.extract or tuple(T.Column(T.Ref(n)) for n in query.entity.returned)
        if any(_numeric_function(query, i) for i in items):
            where.append(source.fp.c.type.in_(_NUMERIC))
        decoders = [decoder(source, item, query.entity) for item in items]
        number = 0
        for d in decoders:  # named, so that GROUP BY can name them (PostgreSQL needs it)
            d.columns = [c.label(f"podium_{number + i}") for i, c in enumerate(d.columns)]
            number += len(d.columns)
        columns = [c for d in decoders for c in d.columns]
        grouped: list[ColumnElement[Any]] = []
        if query.group_by:
            named = {d.label: d for d in decoders if not d.function}
            grouped = [c for r in query.group_by for c in self._group(source, r, named)]
        elif query.entity.name == "fact_names":  # each name once
            grouped = columns
        ordering = query.order_by or self._default_order(query, items)
        keys = {d.label: d for d in decoders}
        order = [
            c.desc().nulls_first() if descending else c.asc().nulls_last()
            for label, descending in ordering
            for c in self._sort_keys(source, query, label, keys)
        ]
        # last: the tables joined are those the fields above used
        statement = select(*columns).select_from(source.from_clause()).where(*where)
        statement = statement.group_by(*grouped)
        count = select(func.count()).select_from(statement.subquery())
        statement = statement.order_by(*order)
        statement = self._hinted(statement, source)
        if query.limit is not None:
            statement = statement.limit(query.limit)
        if query.offset:
            statement = statement.offset(query.offset)
        return Compiled(statement, count, decoders)

    def subquery(self, query: T.Query) -> Select[Any]:
        """``query`` as the right-hand side of ``in``: its extracted key columns."""
        source = Source(query.entity, self.dialect)
        where: list[ColumnElement[bool]] = list(source.conditions())
        if query.where is not None:
            where.append(self.expr(source, query.where))
        assert query.extract is not None
        columns: list[ColumnElement[Any]] = []
        for item in query.extract:
            if isinstance(item, T.Function):
                raise QueryError("a subquery for 'in' extracts fields, not functions")
            columns.append(self._key(source, query.entity.fields[item.ref.name].kind, item.ref))
        grouped = [self._key(source, "", r) for r in query.group_by]
        paged = query.limit is not None or bool(query.offset)
        order = [
            key.desc().nulls_first() if descending else key.asc().nulls_last()
            for label, descending in (
                (query.order_by or self._default_order(query, query.extract)) if paged else ()
            )
            for key in self._sort_keys(source, query, label, {})
        ]
        statement = select(*columns).select_from(source.from_clause()).where(*where)
        statement = self._hinted(statement, source).group_by(*grouped).order_by(*order)
        if paged:  # in a definite order
            statement = statement.limit(query.limit).offset(query.offset or None)
        return statement

    def _hinted(self, statement: Select[Any], source: Source) -> Select[Any]:
        if self.dialect == "sqlite" and source.joins_nodes and not source.reads_document:
            return statement.with_hint(source.n, COVERING, "sqlite")
        return statement

    # conditions

    def expr(self, source: Source, node: T.Expr) -> ColumnElement[bool]:
        if isinstance(node, T.And):
            return and_(true(), *[self.expr(source, i) for i in node.items])
        if isinstance(node, T.Or):
            return or_(false(), *[self.expr(source, i) for i in node.items])
        if isinstance(node, T.Not):
            return not_(self.expr(source, node.item))
        if isinstance(node, T.NodeState):
            return self._state(source, node.state)
        if isinstance(node, T.InQuery):
            right = self.subquery(node.query)
            kinds = [source.entity.fields[r.name].kind for r in node.fields]
            left = [self._key(source, k, r) for k, r in zip(kinds, node.fields, strict=True)]
            if len(left) == 1:
                return left[0].in_(right)
            return tuple_(*left).in_(right)
        ref = node.field
        if ref.pattern is not None:
            if ref.name == "parameters" and source.runs is not None:
                assert ref.pattern.exact is not None  # checked: a parameter's path is exact
                return source.runs.parameter(ref.pattern.exact, node)
            return self._dotted(source, node, ref.pattern)
        kind = source.entity.fields[ref.name].kind
        special = source.condition(ref.name, kind, node)
        if special is not None:
            return special
        if kind == "multi":
            return self._value(source.fp, source.fl, node)
        if kind == "path":
            return self._path(source, node)
        if kind == "type":
            return self._type(source, node)
        column = source.key(ref.name)
        nullable = source.entity.fields[ref.name].nullable
        if isinstance(node, T.IsNull):
            if not nullable:
                return false() if node.null else true()
            return column.is_(None) if node.null else column.is_not(None)
        if isinstance(node, T.Compare):
            condition = _SQL_OPS[node.op](column, node.value)
        elif isinstance(node, T.InValues):
            condition = column.in_(list(node.values)) if node.values else false()
        elif isinstance(node, T.Regex):
            condition = column.regexp_match(node.regex)
        else:  # PathIs is only for paths
            raise QueryError(f"{ref.label} is not a path")
        return and_(column.is_not(None), condition) if nullable else condition

    def _state(self, source: Source, state: str) -> ColumnElement[bool]:
        if source.entity.name == "nodes":
            n = source.n.c
            inactive = n.deactivated.is_not(None) | n.expired.is_not(None)
            return not_(inactive) if state == "active" else inactive
        return active(source.certname(), state)

    def _dotted(self, source: Source, node: T.Expr, pattern: Pattern) -> ColumnElement[bool]:
        """``facts.<path> ...`` (inventory): the fact sets with a leaf that matches."""
        fl, fp = fact_leaves.alias(), fact_paths.alias()
        ids = self.resolved.get(pattern)
        if isinstance(node, T.IsNull):
            exact = pattern.exact
            at = under(fp, exact) if exact is not None else path_condition(fp, pattern, ids)
            condition: ColumnElement[bool] = at
        else:
            condition = and_(path_condition(fp, pattern, ids), self._value(fp, fl, node))
        matching = (
            select(fl.c.factset_id)
            .select_from(fl.join(fp, fp.c.id == fl.c.path_id))
            .where(condition)
        )
        found = source.fs.c.id.in_(matching)
        return not_(found) if isinstance(node, T.IsNull) and node.null else found

    def _value(self, fp: FromClause, fl: FromClause, node: T.Expr) -> ColumnElement[bool]:
        """A condition on a fact value (its type is that of its path)."""
        kind, s, n = fp.c.type, fl.c.s, fl.c.n
        if isinstance(node, T.IsNull):
            return (kind == int(FactType.NULL)) if node.null else (kind != int(FactType.NULL))
        if isinstance(node, T.Regex):
            return and_(kind == int(FactType.STRING), s.regexp_match(node.regex))
        if isinstance(node, T.InValues):
            return or_(
                false(), *[self._value(fp, fl, T.Compare("=", node.field, v)) for v in node.values]
            )
        if not isinstance(node, T.Compare):
            raise QueryError("a fact value is compared with =, <, >, ~, in or null?")
        value = node.value
        if isinstance(value, bool):
            return and_(kind == int(FactType.BOOLEAN), n == (1.0 if value else 0.0))
        if isinstance(value, str):
            return and_(kind == int(FactType.STRING), s == value)
        exact = isinstance(value, int) and abs(value) > EXACT_INTEGER
        if node.op == "=":
            if exact:
                return and_(kind == int(FactType.INTEGER), s == str(value))
            return and_(kind.in_(_NUMERIC), n == float(value), s.is_(None))
        return and_(kind.in_(_NUMERIC), _SQL_OPS[node.op](n, float(value)))

    def _path(self, source: Source, node: T.Expr) -> ColumnElement[bool]:
        fp = source.fp
        if isinstance(node, T.PathIs):
            if node.pattern is not None:
                return path_condition(fp, node.pattern, self.resolved.get(node.pattern))
            return or_(false(), *[path_condition(fp, Pattern(p), None) for p in node.paths])
        if isinstance(node, T.IsNull):
            return false() if node.null else true()
        raise QueryError(f"{node.field.label} is a path: use = with an array, or ~>")  # type: ignore[union-attr]

    def _type(self, source: Source, node: T.Expr) -> ColumnElement[bool]:
        kind = source.fp.c.type
        if isinstance(node, T.IsNull):
            return false() if node.null else true()
        if isinstance(node, T.Regex):
            pattern = checked_regex(node.regex)
            codes = [int(t) for t, label in TYPE_LABELS.items() if pattern.search(label)]
        elif isinstance(node, T.Compare | T.InValues):
            values = [node.value] if isinstance(node, T.Compare) else list(node.values)
            codes = [int(t) for t, label in TYPE_LABELS.items() if label in values]
        else:
            raise QueryError("a fact path's type is compared with =, ~ or in")
        return kind.in_(codes) if codes else false()

    # columns

    def _key(self, source: Source, kind: str, ref: T.Ref) -> ColumnElement[Any]:
        if kind == "multi" or ref.pattern is not None:
            raise QueryError(
                f"{ref.label} is a fact value: 'in' compares names, paths and other fields, "
                "not values; filter on the value inside the subquery instead"
            )
        return source.key(ref.name)

    def _group(
        self, source: Source, ref: T.Ref, named: Mapping[str, Decoder]
    ) -> list[ColumnElement[Any]]:
        returned = named.get(ref.label)
        if returned is not None:
            return [literal_column(str(getattr(c, "name", ""))) for c in returned.columns]
        kind = source.entity.fields[ref.name].kind if ref.pattern is None else "json"
        if kind == "multi":
            return source.value(structured=True)
        if kind == "json":
            assert ref.pattern is not None and ref.pattern.exact is not None
            return [source.subtree(ref.pattern.exact)]
        return [source.key(ref.name)]

    def _sort_keys(
        self, source: Source, query: T.Query, label: str, decoders: Mapping[str, Decoder]
    ) -> Sequence[ColumnElement[Any]]:
        found = decoders.get(label)
        kind = found.kind if found is not None else query.entity.fields[label].kind
        if found is not None and found.function:
            return found.columns[:1]
        if kind == "multi":
            columns = found.columns if found is not None else source.value(structured=False)
            keys = value_key(list(columns))
            return [keys[0], keys[1], self._text(keys[2])]
        if kind == "type":
            return [self._text(source.type_label())]
        column = found.columns[0] if found is not None else source.key(label)
        return [self._text(column) if kind in ("string", "path") else column]

    def _text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """Text in code point order on both databases (PostgreSQL's collation may not be)."""
        return column.collate("C") if self.dialect == "postgresql" else column

    def _default_order(
        self, query: T.Query, items: Sequence[T.Item]
    ) -> tuple[tuple[str, bool], ...]:
        grouped = bool(query.group_by) or any(isinstance(i, T.Function) for i in items)
        if not grouped:  # by the entity's own order, returned or not
            return tuple((name, False) for name in query.entity.order)
        labels = [i.label for i in items]
        return tuple((label, False) for label in labels if _orderable(query, items, label))


def _orderable(query: T.Query, items: Sequence[T.Item], label: str) -> bool:
    for item in items:
        if item.label == label:
            if isinstance(item, T.Function):
                return True
            if item.ref.pattern is not None:
                return False
            return query.entity.fields[item.ref.name].kind != "json"
    return False


def _numeric_function(query: T.Query, item: T.Item) -> bool:
    return (
        isinstance(item, T.Function)
        and item.name != "count"
        and item.ref is not None
        and item.ref.pattern is None
        and query.entity.fields[item.ref.name].kind == "multi"
    )
