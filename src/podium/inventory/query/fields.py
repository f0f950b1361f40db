"""The entities a query can ask for, and their fields (PuppetDB 7's names and types).

Pure data: which fields each entity has, what type they are (which decides the
operators they take), which can be filtered on and which returned, how entities are
related for implicit subqueries, and the order rows come in when none is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from podium.inventory.query.errors import QueryError

Kind = Literal[
    "string",  # text: = ~ in null?
    "timestamp",  # ISO-8601: = < <= > >= in null?
    "boolean",  # = in null?
    "number",  # = < <= > >= in null?
    "multi",  # a fact value: string, number, boolean or null
    "path",  # a fact path, an array: = ~> in
    "json",  # a whole document: only through dotted paths (inventory, resources) or returned
    "array",  # an array of strings (tags, containment_path): = and ~ match an element
    "type",  # a fact path's value type: "string", "integer", ...
]

ORDERABLE: Final = frozenset({"string", "timestamp", "boolean", "number", "multi", "path", "type"})


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    queryable: bool = True
    projectable: bool = True
    nullable: bool = False


@dataclass(frozen=True)
class Relation:
    """How ``["subquery", <other>, ...]`` joins: these columns here, those there."""

    local: tuple[str, ...]
    foreign: tuple[str, ...]


@dataclass(frozen=True)
class Entity:
    name: str
    fields: dict[str, Field]
    order: tuple[str, ...]  # default order: every answer is deterministic
    relations: dict[str, Relation] = field(default_factory=dict)
    dotted: bool = False  # <document>.<path> fields: facts and trusted, or parameters
    document: str = "facts"  # the field dotted paths are in
    per_node: bool = True  # has a certname: inactive nodes are left out by default

    def field(self, name: str) -> Field:
        found = self.fields.get(name)
        if found is None or not (found.queryable or found.projectable):
            raise QueryError(
                f"'{name}' is not a queryable object for {self.name}. Known queryable "
                f"objects are {_listing(f for f in self.fields.values() if f.queryable)}",
                details={"entity": self.name, "field": name},
            )
        return found

    def queryable(self, name: str) -> Field:
        found = self.field(name)
        if not found.queryable:
            raise QueryError(
                f"'{name}' can be returned but not filtered on for {self.name}. Known "
                f"queryable objects are {_listing(f for f in self.fields.values() if f.queryable)}",
                details={"entity": self.name, "field": name},
            )
        return found

    def projectable(self, name: str) -> Field:
        found: Field | None = self.fields.get(name)
        if found is None or not found.projectable:
            raise QueryError(
                f"Can't extract unknown '{name}' for {self.name}. Acceptable fields are "
                f"{_listing(f for f in self.fields.values() if f.projectable)}",
                details={"entity": self.name, "field": name},
            )
        return found

    @property
    def returned(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields.values() if f.projectable)


def _listing(fields: Iterable[Field]) -> str:
    names = [f.name for f in fields]
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]


def _fields(*specs: Field) -> dict[str, Field]:
    return {f.name: f for f in specs}


def _ts(name: str, **kw: bool) -> Field:
    return Field(name, "timestamp", nullable=True, **kw)


def _str(name: str, **kw: bool) -> Field:
    return Field(name, "string", nullable=True, **kw)


def _flag(name: str) -> Field:
    return Field(name, "boolean", nullable=True)


def _text(name: str) -> Field:
    return Field(name, "string")


def _hidden(name: str) -> Field:
    """A field only the default order uses: neither filtered on nor returned."""
    return Field(name, "number", queryable=False, projectable=False)


_CERTNAME = Field("certname", "string")
_BY_CERTNAME = Relation(("certname",), ("certname",))
_PER_NODE = (
    "nodes",
    "facts",
    "fact_contents",
    "factsets",
    "inventory",
    "reports",
    "events",
    "catalogs",
    "resources",
    "edges",
)
# Filtered on, never returned: reports of each node's latest run (reports, events).
_LATEST = Field("latest_report?", "boolean", projectable=False)
_CERTNAME_RELATIONS = {name: _BY_CERTNAME for name in _PER_NODE}
_TO_ENVIRONMENTS = Relation(("environment",), ("name",))
_FROM_ENVIRONMENTS = Relation(("name",), ("environment",))

NODES = Entity(
    "nodes",
    _fields(
        _CERTNAME,
        _ts("deactivated"),
        _ts("expired"),
        _ts("catalog_timestamp"),
        _ts("facts_timestamp"),
        _ts("report_timestamp"),
        _str("catalog_environment"),
        _str("facts_environment"),
        _str("report_environment"),
        _str("latest_report_status"),
        _flag("latest_report_noop"),
        _flag("latest_report_noop_pending"),
        _str("latest_report_hash"),
        _str("latest_report_job_id"),
        _flag("latest_report_corrective_change"),
        _str("cached_catalog_status"),
    ),
    order=("certname",),
    relations=_CERTNAME_RELATIONS,
)

FACTS = Entity(
    "facts",
    _fields(
        _CERTNAME,
        Field("name", "string"),
        Field("value", "multi"),
        _str("environment"),
    ),
    order=("certname", "name"),
    relations={
        **_CERTNAME_RELATIONS,
        "fact_contents": Relation(("certname", "name"), ("certname", "name")),
        "environments": _TO_ENVIRONMENTS,
    },
)

FACT_CONTENTS = Entity(
    "fact_contents",
    _fields(
        _CERTNAME,
        _str("environment"),
        Field("name", "string"),
        Field("path", "path"),
        Field("value", "multi"),
    ),
    order=("certname", "path"),
    relations={
        **_CERTNAME_RELATIONS,
        "facts": Relation(("certname", "name"), ("certname", "name")),
        "environments": _TO_ENVIRONMENTS,
    },
)

FACT_PATHS = Entity(
    "fact_paths",
    _fields(
        Field("path", "path"),
        Field("type", "type"),
        Field("name", "string", projectable=False),
        Field("depth", "number", projectable=False),
    ),
    order=("path", "type"),
    relations={
        "facts": Relation(("name",), ("name",)),
        "fact_contents": Relation(("path",), ("path",)),
    },
    per_node=False,
)

FACT_NAMES = Entity(
    "fact_names",
    _fields(Field("name", "string")),
    order=("name",),
    per_node=False,
)

FACTSETS = Entity(
    "factsets",
    _fields(
        _CERTNAME,
        _str("environment"),
        _ts("timestamp"),
        _ts("producer_timestamp"),
        _str("producer"),
        Field("hash", "string"),
        Field("facts", "json", queryable=False),
    ),
    order=("certname",),
    relations={**_CERTNAME_RELATIONS, "environments": _TO_ENVIRONMENTS},
)

INVENTORY = Entity(
    "inventory",
    _fields(
        _CERTNAME,
        _ts("timestamp"),
        _str("environment"),
        Field("facts", "json"),
        Field("trusted", "json", nullable=True),
    ),
    order=("certname",),
    relations={**_CERTNAME_RELATIONS, "environments": _TO_ENVIRONMENTS},
    dotted=True,
)

ENVIRONMENTS = Entity(
    "environments",
    _fields(Field("name", "string")),
    order=("name",),
    relations={
        name: _FROM_ENVIRONMENTS
        for name in (
            "inventory",
            "factsets",
            "facts",
            "fact_contents",
            "reports",
            "events",
            "catalogs",
            "resources",
        )
    },
    per_node=False,
)

REPORTS = Entity(
    "reports",
    _fields(
        _CERTNAME,
        _text("hash"),
        _text("environment"),
        _str("status"),
        _flag("noop"),
        _flag("noop_pending"),
        _flag("corrective_change"),
        _text("puppet_version"),
        Field("report_format", "number"),
        _text("configuration_version"),
        Field("start_time", "timestamp"),
        Field("end_time", "timestamp"),
        Field("producer_timestamp", "timestamp"),
        Field("receive_time", "timestamp"),
        _str("producer"),
        _str("transaction_uuid"),
        _str("catalog_uuid"),
        _str("code_id"),
        _str("job_id"),
        _str("cached_catalog_status"),
        _text("type"),
        Field("resource_events", "json", queryable=False),
        Field("metrics", "json", queryable=False),
        Field("logs", "json", queryable=False),
        _LATEST,
    ),
    order=("certname", "producer_timestamp", "hash"),
    relations={
        **_CERTNAME_RELATIONS,
        "environments": _TO_ENVIRONMENTS,
        "events": Relation(("hash",), ("report",)),
    },
)

EVENTS = Entity(
    "events",
    _fields(
        _CERTNAME,
        _text("report"),
        _str("status"),
        Field("timestamp", "timestamp"),
        Field("run_start_time", "timestamp"),
        Field("run_end_time", "timestamp"),
        Field("report_receive_time", "timestamp"),
        _text("resource_type"),
        _text("resource_title"),
        _str("property"),
        _str("name"),
        _str("new_value"),
        _str("old_value"),
        _str("message"),
        _str("file"),
        Field("line", "number", nullable=True),
        Field("containment_path", "array", nullable=True),
        _str("containing_class"),
        _flag("corrective_change"),
        _text("environment"),
        _text("configuration_version"),
        _LATEST,
        _hidden("report_id"),
        _hidden("seq"),
    ),
    order=("certname", "report_id", "seq"),
    relations={
        **_CERTNAME_RELATIONS,
        "environments": _TO_ENVIRONMENTS,
        "reports": Relation(("report",), ("hash",)),
    },
)

CATALOGS = Entity(
    "catalogs",
    _fields(
        _CERTNAME,
        _text("version"),
        _str("environment"),
        _str("transaction_uuid"),
        _str("catalog_uuid"),
        _str("code_id"),
        _str("job_id"),
        _text("hash"),
        Field("producer_timestamp", "timestamp"),
        _str("producer"),
        Field("resources", "json", queryable=False),
        Field("edges", "json", queryable=False),
    ),
    order=("certname",),
    relations={**_CERTNAME_RELATIONS, "environments": _TO_ENVIRONMENTS},
)

RESOURCES = Entity(
    "resources",
    _fields(
        _CERTNAME,
        _text("resource"),
        _text("type"),
        _text("title"),
        Field("tags", "array"),
        Field("exported", "boolean"),
        _str("file"),
        Field("line", "number", nullable=True),
        _str("environment"),
        Field("parameters", "json"),
        Field("tag", "string", projectable=False),  # one of the tags, in any case
    ),
    order=("certname", "type", "title"),
    relations={**_CERTNAME_RELATIONS, "environments": _TO_ENVIRONMENTS},
    dotted=True,
    document="parameters",
)

EDGES = Entity(
    "edges",
    _fields(
        _CERTNAME,
        _text("relationship"),
        _text("source_title"),
        _text("source_type"),
        _text("target_title"),
        _text("target_type"),
    ),
    order=(
        "certname",
        "source_type",
        "source_title",
        "relationship",
        "target_type",
        "target_title",
    ),
    relations=_CERTNAME_RELATIONS,
)

ENTITIES: Final = {
    e.name: e
    for e in (
        NODES,
        FACTS,
        FACT_CONTENTS,
        FACT_PATHS,
        FACT_NAMES,
        FACTSETS,
        INVENTORY,
        ENVIRONMENTS,
        REPORTS,
        EVENTS,
        CATALOGS,
        RESOURCES,
        EDGES,
    )
}

# PuppetDB's other entities: valid names there, but Podium keeps no such data yet.
ELSEWHERE: Final = frozenset(
    {"producers", "packages", "package_inventory", "catalog_inputs", "catalog_input_contents"}
)
# Summaries of events, with parameters of their own: endpoints, not query entities.
COUNTS: Final = frozenset({"event_counts", "aggregate_event_counts"})


def entity(name: object) -> Entity:
    """The entity called ``name`` (its endpoint spelling, fact-contents, works too)."""
    if isinstance(name, str):
        found = ENTITIES.get(name.replace("-", "_"))
        if found is not None:
            return found
        if name.replace("-", "_") in ELSEWHERE:
            raise QueryError(
                f"Podium's inventory holds no {name}: it has facts, reports and catalogs. "
                f"Entities: {', '.join(ENTITIES)}",
                details={"entity": name},
            )
        if name.replace("-", "_") in COUNTS:
            endpoint = name.replace("_", "-")
            raise QueryError(
                f"{name} is asked of its endpoint, /pdb/query/v4/{endpoint}, with "
                f"summarize_by (certname, resource or containing_class) and the events' query",
                details={"entity": name},
            )
    raise QueryError(
        f"{name!r} is not an entity. Entities: {', '.join(ENTITIES)}",
        details={"entity": str(name)},
    )
