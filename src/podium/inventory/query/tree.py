"""A query after validation: what :mod:`.validate` makes of PuppetDB's AST and what
:mod:`.compiler` turns into SQL. Every field named here exists and takes its operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from podium.inventory.query.fields import Entity
from podium.inventory.query.paths import Pattern


@dataclass(frozen=True)
class Ref:
    """A field of the query's entity; for ``facts.<path>`` and ``trusted.<path>``, the
    field is ``facts``, ``pattern`` the path and ``text`` what the query said."""

    name: str
    pattern: Pattern | None = None
    text: str | None = None

    @property
    def label(self) -> str:
        return self.text or self.name


@dataclass(frozen=True)
class Compare:
    op: str  # = < <= > >=
    field: Ref
    value: Any


@dataclass(frozen=True)
class Regex:
    field: Ref
    regex: str


@dataclass(frozen=True)
class PathIs:
    """A fact path field equal to one of ``paths`` or matching ``pattern``."""

    field: Ref
    paths: tuple[tuple[str | int, ...], ...] = ()
    pattern: Pattern | None = None


@dataclass(frozen=True)
class IsNull:
    field: Ref
    null: bool


@dataclass(frozen=True)
class InValues:
    field: Ref
    values: tuple[Any, ...]


@dataclass(frozen=True)
class InQuery:
    fields: tuple[Ref, ...]
    query: Query


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Not:
    item: Expr


@dataclass(frozen=True)
class NodeState:
    state: str  # active, inactive


Expr = Compare | Regex | PathIs | IsNull | InValues | InQuery | And | Or | Not | NodeState


@dataclass(frozen=True)
class Column:
    """A returned field, ``label`` as the answer's key."""

    ref: Ref

    @property
    def label(self) -> str:
        return self.ref.label


@dataclass(frozen=True)
class Function:
    """``["function", name, field?]``: an aggregate, keyed by its name in the answer."""

    name: str  # count avg sum min max
    ref: Ref | None = None

    @property
    def label(self) -> str:
        return self.name


Item = Column | Function


@dataclass(frozen=True)
class Query:
    entity: Entity
    where: Expr | None = None
    extract: tuple[Item, ...] | None = None  # None: every field
    group_by: tuple[Ref, ...] = ()
    order_by: tuple[tuple[str, bool], ...] = ()  # (label, descending)
    limit: int | None = None
    offset: int = 0
    states: frozenset[str] = field(default_factory=frozenset)  # node_state given anywhere

    @property
    def labels(self) -> tuple[str, ...]:
        if self.extract is None:
            return self.entity.returned
        return tuple(item.label for item in self.extract)
