"""Where reports, events, catalogs, resources and edges come from in SQL (see
:mod:`.source`, which hands these entities over to a :class:`Runs`).

Most of their fields are columns. The others are conditions of their own: ``latest_report?``
(the report a node's ``latest_report_hash`` names), an element of an array (``tags``,
``containment_path``; ``tag`` in any case), and a resource's parameters by path
(``parameters.ensure``), compared by type as fact values are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Numeric,
    Text,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
)

from podium.inventory.query import nested
from podium.inventory.query import tree as T
from podium.inventory.query.errors import QueryError
from podium.inventory.store import COVERING
from podium.store.tables import (
    catalog_edges,
    catalog_resources,
    catalogs,
    nodes,
    reports,
    resource_events,
)

RUN_ENTITIES: Final = frozenset({"reports", "events", "catalogs", "resources", "edges"})

# Fields that are another table's column than the entity's own (alias, column).
_OTHER_COLUMNS: Final = {
    "events": {
        "report": ("r", "hash"),
        "run_start_time": ("r", "start_time"),
        "run_end_time": ("r", "end_time"),
        "report_receive_time": ("r", "receive_time"),
        "environment": ("r", "environment"),
        "configuration_version": ("r", "configuration_version"),
    },
    "resources": {"environment": ("c", "environment")},
}
_OWN: Final = {"reports": "r", "events": "ev", "catalogs": "c", "resources": "cr", "edges": "ce"}
# JSON fields: the href of their answer ({"href", "data"}), by the field that fills it.
_HREFS: Final = {
    ("reports", "metrics"): ("hash", "/pdb/query/v4/reports/{}/metrics"),
    ("reports", "logs"): ("hash", "/pdb/query/v4/reports/{}/logs"),
    ("reports", "resource_events"): ("hash", "/pdb/query/v4/reports/{}/events"),
    ("catalogs", "resources"): ("certname", "/pdb/query/v4/catalogs/{}/resources"),
    ("catalogs", "edges"): ("certname", "/pdb/query/v4/catalogs/{}/edges"),
}


class Runs:
    """One run entity's rows in one (sub)query, with its own table aliases."""

    def __init__(
        self, entity: str, dialect: str, iso: Callable[[ColumnElement[Any]], ColumnElement[Any]]
    ) -> None:
        self.entity = entity
        self.dialect = dialect
        self.iso = iso
        self.r = reports.alias()
        self.ev = resource_events.alias()
        self.c = catalogs.alias()
        self.cr = catalog_resources.alias()
        self.ce = catalog_edges.alias()
        self._catalog_joined = False  # resources: their catalog's, for its environment

    def from_clause(self) -> FromClause:
        if self.entity == "events":  # every event has its report, by primary key
            return self.ev.join(self.r, self.r.c.id == self.ev.c.report_id)
        if self.entity == "resources" and self._catalog_joined:
            return self.cr.join(self.c, self.c.c.certname == self.cr.c.certname)
        return self._own()

    def _own(self) -> FromClause:
        own: FromClause = getattr(self, _OWN[self.entity])
        return own

    def certname(self) -> ColumnElement[Any]:
        return self._own().c.certname

    def key(self, name: str) -> ColumnElement[Any]:
        """The column of a field."""
        alias, column = _OTHER_COLUMNS.get(self.entity, {}).get(name, (_OWN[self.entity], name))
        if alias == "c" and self.entity == "resources":
            self._catalog_joined = True
        table: FromClause = getattr(self, alias)
        if column not in table.c:
            raise QueryError(f"{name} cannot be compared here for {self.entity}")
        return table.c[column]

    def text(self, name: str) -> ColumnElement[Any]:
        """A JSON column's text."""
        column = self.key(name)
        return cast(column, Text) if self.dialect == "postgresql" else type_coerce(column, Text)

    def document(self, name: str) -> tuple[list[ColumnElement[Any]], str | None]:
        """A JSON field's columns, and the href its answer has (None: the JSON alone)."""
        found = _HREFS.get((self.entity, name))
        if found is None:
            return [self.text(name)], None
        by, href = found
        if name == "resource_events":
            data = nested.report_events(self.dialect, self.r, self.iso)
        elif name == "resources":
            data = nested.catalog_resources_json(self.dialect, self.c, self.iso)
        elif name == "edges":
            data = nested.catalog_edges_json(self.dialect, self.c, self.iso)
        else:
            data = self.text(name)
        return [data, self.key(by)], href

    # conditions that are not a column's comparison

    def condition(self, name: str, kind: str, node: T.Expr) -> ColumnElement[bool] | None:
        if name == "latest_report?":
            return self._latest(node)
        if name == "tag":
            return self._element(self.cr.c.tags, node, nullable=False, lower=True)
        if kind == "array":
            nullable = name == "containment_path"
            return self._element(self.key(name), node, nullable=nullable, lower=False)
        return None

    def _latest(self, node: T.Expr) -> ColumnElement[bool]:
        if isinstance(node, T.IsNull):
            return false() if node.null else true()
        if isinstance(node, T.Compare):
            wanted = {node.value}
        elif isinstance(node, T.InValues):
            wanted = set(node.values)
        else:
            raise QueryError("latest_report? is compared with = true or = false")
        if wanted == {True, False}:
            return true()
        if not wanted:
            return false()
        hashes = select(nodes.c.latest_report_hash).where(nodes.c.latest_report_hash.is_not(None))
        latest = self.r.c.hash.in_(hashes.with_hint(nodes, COVERING, "sqlite"))
        return latest if True in wanted else not_(latest)

    def _element(
        self, column: ColumnElement[Any], node: T.Expr, *, nullable: bool, lower: bool
    ) -> ColumnElement[bool]:
        """An array with an element that meets ``node``."""
        if isinstance(node, T.IsNull):
            if not nullable:
                return false() if node.null else true()
            return column.is_(None) if node.null else column.is_not(None)
        if self.dialect == "postgresql":
            elements = func.jsonb_array_elements_text(column).table_valued("value")
        else:
            elements = func.json_each(type_coerce(column, Text)).table_valued("value")
        value = elements.c.value

        def fold(text: Any) -> Any:
            return text.lower() if lower and isinstance(text, str) else text

        if isinstance(node, T.Compare):
            matched: ColumnElement[bool] = value == fold(node.value)
        elif isinstance(node, T.InValues):
            if not node.values:
                return false()
            matched = value.in_([fold(v) for v in node.values])
        elif isinstance(node, T.Regex):
            matched = value.regexp_match(node.regex)
        else:
            raise QueryError(f"{node.field.label} is an array: compare an element with = or ~")  # type: ignore[union-attr]
        return exists(select(literal(1)).select_from(elements).where(matched))

    def parameter(self, path: tuple[str | int, ...], node: T.Expr) -> ColumnElement[bool]:
        """A resource whose parameter at ``path`` meets ``node``, compared by type:
        ``"1"`` is not ``1``, ``true`` is not ``"true"``."""
        document = self.cr.c.parameters
        if self.dialect == "postgresql":
            keys = [literal(str(p), Text) for p in path]
            found = func.jsonb_extract_path(document, *keys)
            kind = func.jsonb_typeof(found)
            text = func.jsonb_extract_path_text(document, *keys)
            names: dict[str, tuple[str, ...]] = {
                "string": ("string",),
                "number": ("number",),
                "null": ("null",),
            }
            number: ColumnElement[Any] = cast(case((kind == "number", text)), Numeric)
        else:
            where = "$"
            for part in path:
                if isinstance(part, int):
                    where += f"[{part}]"
                elif '"' in part:
                    raise QueryError(f"a parameter's name has no double quote: {part!r}")
                else:
                    where += f'."{part}"'
            raw = type_coerce(document, Text)
            kind = func.json_type(raw, where)
            text = func.json_extract(raw, where)
            names = {"string": ("text",), "number": ("integer", "real"), "null": ("null",)}
            number = case((kind.in_(names["number"]), text))
        return self._typed(node, kind, text, number, names)

    def _typed(
        self,
        node: T.Expr,
        kind: ColumnElement[Any],
        text: ColumnElement[Any],
        number: ColumnElement[Any],
        names: dict[str, tuple[str, ...]],
    ) -> ColumnElement[bool]:
        if isinstance(node, T.IsNull):
            missing = or_(kind.is_(None), kind.in_(names["null"]))
            return missing if node.null else not_(missing)
        if isinstance(node, T.Regex):
            return and_(kind.in_(names["string"]), text.regexp_match(node.regex))
        if isinstance(node, T.InValues):
            return or_(
                false(),
                *[
                    self._typed(T.Compare("=", node.field, v), kind, text, number, names)
                    for v in node.values
                ],
            )
        if not isinstance(node, T.Compare):
            raise QueryError("a parameter is compared with =, <, >, ~, in or null?")
        value = node.value
        if isinstance(value, bool):
            word = "true" if value else "false"
            if self.dialect == "postgresql":
                return and_(kind == "boolean", text == word)
            return kind == word
        if isinstance(value, str):
            return and_(kind.in_(names["string"]), text == value)
        if self.dialect == "postgresql":  # as numeric: a parameter's number may be huge
            value = cast(literal(value), Numeric)
        compared = {
            "=": number == value,
            "<": number < value,
            "<=": number <= value,
            ">": number > value,
            ">=": number >= value,
        }[node.op]
        return and_(kind.in_(names["number"]), compared)
