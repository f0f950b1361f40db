"""Targeting: a job's scope → the certnames it runs on, the same for every job kind.

A scope names exactly one of ``nodes`` (certnames, or globs matched against the
inventory), ``query`` (PQL text or a PuppetDB AST whose rows carry certnames) or
``node_group`` (a group's id). Podium adds ``classes`` (nodes whose node groups assign
every class given), which may stand alone or narrow a ``query``. :func:`resolve` is
pure: the lookups it needs come in an :class:`Inventory`, so tests give it a dict.

What a user sees is never silent: duplicates dropped, globs that matched nothing, and
how many nodes lack a fact the query uses are all in the :class:`Target`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from podium.errors import ValidationError
from podium.protocol.names import validate_certname

EMPTY_TARGET: Final = "puppetlabs.orchestrator/empty-target"
QUERY_ERROR: Final = "puppetlabs.orchestrator/query-error"
SCOPE_KEYS: Final = ("nodes", "query", "node_group")
_GLOB: Final = frozenset("*?[")
_MAX_NODES: Final = 100_000


@dataclass(frozen=True)
class Scope:
    """What a job command asked to target."""

    nodes: tuple[str, ...] = ()
    query: str | list[Any] | None = None
    node_group: str | None = None
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """The certnames a scope resolved to (frozen into the job), and what to tell about it."""

    certnames: tuple[str, ...]
    duplicates: tuple[str, ...] = ()
    unmatched: tuple[str, ...] = ()  # globs that matched no node
    missing_facts: dict[str, int] = field(default_factory=dict)  # fact → nodes lacking it
    explain: str = ""


class Inventory(Protocol):
    """The lookups :func:`resolve` needs (the server answers them from its database)."""

    def active_certnames(self) -> list[str]: ...

    def query_certnames(self, query: str | list[Any]) -> list[str]: ...

    def group_members(self, group_id: str) -> list[str]: ...

    def class_members(self, classes: Sequence[str]) -> list[str]: ...

    def lacking(self, facts: Sequence[str]) -> dict[str, int]: ...


def parse_scope(raw: object) -> Scope:
    """A scope from an API body, checked: exactly one way to name the nodes."""
    if not isinstance(raw, Mapping):
        raise ValidationError(
            "scope must be an object with one of nodes, query or node_group",
            kind=EMPTY_TARGET,
        )
    unknown = sorted(set(raw) - {*SCOPE_KEYS, "classes", "application"})
    if unknown:
        raise ValidationError(
            f"scope has unknown field(s) {', '.join(unknown)}; give one of "
            "nodes, query or node_group",
            details={"fields": unknown},
        )
    if "application" in raw:
        raise ValidationError(
            "scope.application is not supported yet; target nodes, a query or a node group"
        )
    given = [k for k in SCOPE_KEYS if raw.get(k) is not None]
    classes = _classes(raw.get("classes"))
    if len(given) > 1 or (classes and given and given != ["query"]):
        raise ValidationError(
            f"scope gives {' and '.join(given + (['classes'] if classes else []))}: give "
            "exactly one of nodes, query or node_group (classes may narrow a query)",
            details={"fields": given},
        )
    if not given and not classes:
        raise ValidationError(
            "scope names no nodes: give one of nodes, query or node_group", kind=EMPTY_TARGET
        )
    nodes = raw.get("nodes")
    if nodes is not None:
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            raise ValidationError("scope.nodes must be a list of certnames")
        if not nodes:
            raise ValidationError(
                "the job targets no nodes: scope.nodes is empty; give at least one node name",
                kind=EMPTY_TARGET,
            )
        if len(nodes) > _MAX_NODES:
            raise ValidationError(f"scope.nodes lists over {_MAX_NODES} nodes; use a query")
        return Scope(nodes=tuple(nodes))
    query = raw.get("query")
    if query is not None and not (isinstance(query, str | list) and query):
        raise ValidationError("scope.query must be PQL text or a PuppetDB AST query (a list)")
    group = raw.get("node_group")
    if group is not None and not (isinstance(group, str) and group):
        raise ValidationError("scope.node_group must be a node group's id")
    return Scope(query=query, node_group=group, classes=classes)


def _classes(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, str) and c for c in value):
        raise ValidationError("scope.classes must be a list of class names")
    return tuple(value)


def resolve(scope: Scope, inventory: Inventory) -> Target:
    """The certnames ``scope`` stands for, in a stable order, with what to report."""
    if scope.nodes:
        return _resolve_nodes(scope.nodes, inventory)
    if scope.node_group is not None:
        names = inventory.group_members(scope.node_group)
        return Target(tuple(sorted(set(names))), explain=f"node group {scope.node_group}")
    found: set[str] | None = None
    explain = []
    facts: list[str] = []
    if scope.query is not None:
        found = set(inventory.query_certnames(scope.query))
        facts = fact_paths(scope.query)
        explain.append(scope.query if isinstance(scope.query, str) else repr(scope.query))
    if scope.classes:
        members = set(inventory.class_members(scope.classes))
        found = members if found is None else found & members
        explain.append(f"classes {', '.join(scope.classes)} (from node groups)")
    certnames = tuple(sorted(found or ()))
    missing = inventory.lacking(facts) if facts else {}
    return Target(certnames, missing_facts=missing, explain=" and ".join(explain))


def _resolve_nodes(nodes: Sequence[str], inventory: Inventory) -> Target:
    seen: dict[str, None] = {}
    duplicates: list[str] = []
    unmatched: list[str] = []
    known: list[str] | None = None
    for name in nodes:
        if _GLOB & set(name):
            known = inventory.active_certnames() if known is None else known
            matched = fnmatch.filter(known, name)
            if not matched:
                unmatched.append(name)
            names: Iterable[str] = sorted(matched)
        else:
            names = (validate_certname(name, "node"),)
        for certname in names:
            if certname in seen:
                duplicates.append(certname)
            seen[certname] = None
    return Target(
        tuple(seen),
        duplicates=tuple(dict.fromkeys(duplicates)),
        unmatched=tuple(unmatched),
        explain=f"nodes {', '.join(nodes[:5])}{' ...' if len(nodes) > 5 else ''}",
    )


def fact_paths(query: str | list[Any]) -> list[str]:
    """The facts a query filters on (``os.family`` for ``facts.os.family``), in order."""
    if isinstance(query, str):
        from podium.inventory.pql import parse_pql

        query = parse_pql(query)
    found: dict[str, None] = {}
    _walk_fields(query, found, 0)
    return list(found)


_COMPARISONS: Final = frozenset({"=", "<", "<=", ">", ">=", "~", "~>", "null?", "in"})


def _walk_fields(node: Any, found: dict[str, None], depth: int) -> None:
    if depth > 200 or not isinstance(node, list) or not node:
        return
    field = node[1] if node[0] in _COMPARISONS and len(node) > 1 else None
    if isinstance(field, str) and field.startswith("facts.") and len(field) > 6:
        found[field[6:]] = None
    for item in node[1:]:
        _walk_fields(item, found, depth + 1)
