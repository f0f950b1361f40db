"""Where each entity's rows come from in SQL, and the columns behind each field.

A :class:`Source` is one use of an entity in a query (subqueries get their own, with
their own table aliases). Tables are joined only when a field used needs them, so that
``nodes { facts { ... } }`` does not join ``nodes`` twice. Fact values are stored in
typed columns (see :mod:`podium.inventory.facts`); a field of kind ``multi`` is the
tuple ``(type, s, n[, structured])`` and :func:`value_key` gives its scalar order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Text,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    null,
    select,
    true,
    type_coerce,
    union,
)

from podium.inventory.facts import CONTAINERS, SCALARS, FactType
from podium.inventory.query import tree as T
from podium.inventory.query.errors import QueryError
from podium.inventory.query.fields import Entity
from podium.inventory.query.paths import Pattern
from podium.inventory.query.runs import RUN_ENTITIES, Runs
from podium.store.tables import INACTIVE, fact_leaves, fact_paths, factsets, nodes

# Order of values of different types (PostgreSQL's for jsonb): null, string, number,
# boolean, array, object. Within a type: numerically, by code point, false < true.
_RANK = {
    FactType.NULL: 0,
    FactType.STRING: 1,
    FactType.INTEGER: 2,
    FactType.FLOAT: 2,
    FactType.BOOLEAN: 3,
    FactType.ARRAY: 4,
    FactType.OBJECT: 5,
}
TYPE_LABELS = {t: t.name.lower() for t in SCALARS}
_NODE_FIELDS = {
    "certname",
    "deactivated",
    "expired",
    "catalog_timestamp",
    "facts_timestamp",
    "report_timestamp",
    "catalog_environment",
    "facts_environment",
    "report_environment",
    "latest_report_status",
    "latest_report_noop",
    "latest_report_noop_pending",
    "latest_report_hash",
    "latest_report_job_id",
    "latest_report_corrective_change",
    "cached_catalog_status",
}


class Source:
    """One entity's rows in one (sub)query."""

    def __init__(self, entity: Entity, dialect: str) -> None:
        self.entity = entity
        self.dialect = dialect
        self.n = nodes.alias()
        self.fs = factsets.alias()
        self.fp = fact_paths.alias()
        self.fl = fact_leaves.alias()
        self._nodes_joined = entity.name == "nodes"  # others: when a field needs it
        self.reads_document = False  # whether the node's facts are read (SQLite's hint)
        self._environments: FromClause | None = None
        # reports, events, catalogs, resources, edges
        self.runs = Runs(entity.name, dialect, self.iso) if entity.name in RUN_ENTITIES else None

    # the FROM clause and the conditions every row meets

    def from_clause(self) -> FromClause:
        name = self.entity.name
        if self.runs is not None:
            return self.runs.from_clause()
        if name == "nodes":
            return self.n
        if name in ("factsets", "inventory"):
            if not self._nodes_joined:
                return self.fs
            return self.fs.join(self.n, self.n.c.certname == self.fs.c.certname)
        if name in ("facts", "fact_contents"):
            joined = self.fl.join(self.fp, self.fp.c.id == self.fl.c.path_id).join(
                self.fs, self.fs.c.id == self.fl.c.factset_id
            )
            if self._nodes_joined:
                joined = joined.join(self.n, self.n.c.certname == self.fs.c.certname)
            return joined
        if name in ("fact_paths", "fact_names"):
            return self.fp
        return self.environments()

    def conditions(self) -> list[ColumnElement[bool]]:
        name = self.entity.name
        if name == "facts":
            return [self.fp.c.depth == 0]
        if name == "fact_contents":
            return [self.fp.c.type.in_([int(t) for t in SCALARS])]
        if name in ("fact_paths", "fact_names"):
            used = exists().where(fact_leaves.c.path_id == self.fp.c.id)
            if name == "fact_paths":
                return [self.fp.c.type.in_([int(t) for t in SCALARS]), used]
            return [used]
        return []

    def environments(self) -> FromClause:
        """Every environment a node's facts, latest report or catalog names."""
        if self._environments is None:
            columns = (
                nodes.c.facts_environment,
                nodes.c.report_environment,
                nodes.c.catalog_environment,
            )
            names = [select(c.label("name")).where(c.is_not(None)) for c in columns]
            self._environments = union(*names).subquery()
        return self._environments

    # fields

    def certname(self) -> ColumnElement[Any]:
        if self.runs is not None:
            return self.runs.certname()
        return self.n.c.certname if self.entity.name == "nodes" else self.fs.c.certname

    def key(self, name: str) -> ColumnElement[Any]:
        """The one column a field compares and joins on (a value: see :meth:`value`)."""
        entity = self.entity.name
        if self.runs is not None:
            return self.runs.key(name)
        if name == "certname":
            return self.certname()
        if entity == "nodes" and name in _NODE_FIELDS:
            return self.n.c[name]
        if name == "environment":
            return self._node("facts_environment")
        if entity in ("factsets", "inventory"):
            column = {"timestamp": "facts_timestamp"}.get(name, name)
            if column == "hash":
                return self.fs.c.hash
            if column in ("facts_timestamp", "producer_timestamp", "producer"):
                return self._node(column)
        paths = entity in ("facts", "fact_contents", "fact_paths", "fact_names")
        if paths and name in ("name", "path", "depth", "type"):
            return self.fp.c[name]
        if entity == "environments" and name == "name":
            return self.environments().c.name
        raise QueryError(f"{name} cannot be compared here for {entity}")

    def condition(self, name: str, kind: str, node: T.Expr) -> ColumnElement[bool] | None:
        """The condition on a field that is not a comparison of its column (arrays,
        ``latest_report?``, ``tag``), or None."""
        return None if self.runs is None else self.runs.condition(name, kind, node)

    def text(self, name: str) -> ColumnElement[Any]:
        """A JSON field's text (arrays, documents of run entities)."""
        if self.runs is None:
            raise QueryError(f"{name} is not a JSON field of {self.entity.name}")
        return self.runs.text(name)

    @property
    def joins_nodes(self) -> bool:
        return self._nodes_joined

    def _node(self, column: str) -> ColumnElement[Any]:
        self._nodes_joined = True
        return self.n.c[column]

    def value(self, *, structured: bool) -> list[ColumnElement[Any]]:
        """A fact value's columns: type, s, n, and the JSON text of a structured one."""
        columns: list[ColumnElement[Any]] = [self.fp.c.type, self.fl.c.s, self.fl.c.n]
        if structured and self.entity.name == "facts":
            columns.append(
                case(
                    (
                        self.fp.c.type.in_([int(t) for t in CONTAINERS]),
                        self._member(self.fp.c.name),
                    ),
                    else_=null(),
                )
            )
        return columns

    def document(self) -> ColumnElement[Any]:
        """The facts document as JSON text."""
        self.reads_document = True
        facts = self._node("facts")
        return cast(facts, Text) if self.dialect == "postgresql" else type_coerce(facts, Text)

    def _member(self, key: ColumnElement[Any]) -> ColumnElement[Any]:
        """The JSON text of the top-level fact ``key`` of the node's document: a lookup
        of its own, made only for the rows that need it (no join of every row)."""
        owner = nodes.alias()
        mine = owner.c.certname == self.fs.c.certname
        if self.dialect == "postgresql":
            return select(cast(owner.c.facts.op("->")(key), Text)).where(mine).scalar_subquery()
        each = func.json_each(type_coerce(owner.c.facts, Text)).table_valued("key", "value")
        found = select(each.c.value).select_from(owner).join(each, true())
        return found.where(mine, each.c.key == key).scalar_subquery()

    def subtree(self, path: tuple[str | int, ...]) -> ColumnElement[Any]:
        """The JSON text at ``path`` in the node's document (NULL where there is none)."""
        self.reads_document = True
        facts = self._node("facts")
        if self.dialect == "postgresql":
            return cast(func.jsonb_extract_path(facts, *[str(p) for p in path]), Text)
        text = "$"
        for part in path:
            if isinstance(part, int):
                text += f"[{part}]"
            elif '"' in part:
                raise QueryError(f"cannot return a key with a double quote in it: {part!r}")
            else:
                text += f'."{part}"'
        return type_coerce(facts, Text).op("->")(literal(text))

    def iso(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """A timestamp as PuppetDB's text (``2026-03-01T12:00:00.000Z``), made by the
        database: thousands of rows need no formatting in Python."""
        if self.dialect == "postgresql":
            utc = func.timezone("UTC", column)
            return func.to_char(utc, literal('YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
        return func.strftime(literal("%Y-%m-%dT%H:%M:%fZ"), type_coerce(column, Text))

    def type_label(self) -> ColumnElement[Any]:
        whens = [(self.fp.c.type == int(t), literal(label)) for t, label in TYPE_LABELS.items()]
        return case(*whens, else_=literal("json"))


def value_key(columns: list[ColumnElement[Any]]) -> list[ColumnElement[Any]]:
    """What a fact value sorts by: its type's rank, then number, then text."""
    kind, s, n = columns[:3]
    rank = case(*[(kind == int(t), literal(r)) for t, r in _RANK.items()], else_=literal(9))
    return [rank, n, s]


def path_condition(fp: FromClause, pattern: Pattern, ids: list[int] | None) -> ColumnElement[bool]:
    """Rows of ``fp`` (fact_paths) whose path is ``pattern``: by its text when it is a
    plain path, else among the ``ids`` it was matched to."""
    from podium.inventory.facts import encode_path

    exact = pattern.exact
    if exact is not None:
        return fp.c.path == encode_path(exact)
    if not ids:
        return false()
    return fp.c.id.in_(ids)


def under(fp: FromClause, path: tuple[str | int, ...]) -> ColumnElement[bool]:
    """Rows of ``fp`` at ``path`` or below it."""
    from podium.inventory.facts import encode_path

    text = encode_path(path)
    prefix = text[:-1] + ","
    return (fp.c.path == text) | (func.substr(fp.c.path, 1, len(prefix)) == prefix)


def active(certname: ColumnElement[Any], state: str) -> ColumnElement[bool]:
    """``certname`` is that of an active (or inactive) node. The inactive are few and
    have an index of their own (``ix_nodes_inactive``), so this reads only them."""
    inactive = select(nodes.c.certname).where(INACTIVE)
    return certname.not_in(inactive) if state == "active" else certname.in_(inactive)
