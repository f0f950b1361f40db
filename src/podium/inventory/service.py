"""What targeting asks the server's inventory: active nodes, a query's certnames, a
node group's members, the nodes whose groups assign a class, and who lacks a fact.

Blocking (database reads): call it from a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from podium.classifier.groups import classify, group_members
from podium.classifier.store import GroupStore
from podium.errors import PodiumError, ValidationError
from podium.inventory.targeting import QUERY_ERROR
from podium.store import NodeRecord, Store

# Runs a PuppetDB AST query (["from", entity, ...]) and returns its rows.
QueryRunner = Callable[[list[Any]], list[Any]]


class InventoryService:
    """The lookups of :class:`podium.inventory.targeting.Inventory`, over the database."""

    def __init__(self, store: Store, groups: GroupStore, run_query: QueryRunner) -> None:
        self.store = store
        self.groups = groups
        self._run_query = run_query

    def _active(self) -> list[NodeRecord]:
        return [n for n in self.store.list_nodes() if not n.deactivated]

    def active_certnames(self) -> list[str]:
        return [n.certname for n in self._active()]

    def query_certnames(self, query: str | list[Any]) -> list[str]:
        try:
            if isinstance(query, str):
                from podium.inventory.pql import parse_pql

                query = parse_pql(query)
            if not (isinstance(query, list) and query[:1] == ["from"]):
                raise ValidationError(
                    'a target query is a whole query: ["from", "<entity>", ...] or PQL text'
                )
            rows = self._run_query(query)
        except ValidationError as exc:  # the orchestrator's kind for a bad target query
            raise ValidationError(exc.msg, kind=QUERY_ERROR, details=exc.details) from exc
        names: dict[str, None] = {}
        for row in rows:
            certname = row.get("certname") if isinstance(row, dict) else None
            if not isinstance(certname, str):
                raise ValidationError(
                    "the query's rows carry no certname, so they name no nodes: ask for "
                    "certname, e.g. inventory[certname] { ... } or nodes[certname] { ... }",
                    kind=QUERY_ERROR,
                )
            names[certname] = None
        return list(names)

    def group_members(self, group_id: str) -> list[str]:
        return group_members(self.groups.hierarchy(), group_id, self._facts())

    def class_members(self, classes: Sequence[str]) -> list[str]:
        tree = self.groups.hierarchy()
        wanted = set(classes)
        members = []
        for certname, facts, trusted in self._facts():
            try:
                assigned = classify(tree, certname, facts, trusted).classes
            except PodiumError:  # conflicting groups: the node is not classified
                continue
            if wanted <= set(assigned):
                members.append(certname)
        return members

    def classifications(self, certnames: Sequence[str]) -> dict[str, dict[str, Any] | str]:
        """Each node's classification (``environment``, ``classes``, ``parameters``) from
        its node groups and stored facts, or why it has none (conflicting groups)."""
        tree = self.groups.hierarchy()
        stored = self.store.node_facts(certnames)
        out: dict[str, dict[str, Any] | str] = {}
        for certname in certnames:
            try:
                found = classify(tree, certname, stored.get(certname, {}), trusted_facts(certname))
            except PodiumError as exc:
                out[certname] = f"cannot classify {certname}: {exc.msg}"
                continue
            out[certname] = found.to_json()
        return out

    def lacking(self, facts: Sequence[str]) -> dict[str, int]:
        # Counted by the query engine: no facts document is read.
        total = self._count(None)
        missing = {fact: total - self._count(["null?", f"facts.{fact}", False]) for fact in facts}
        return {fact: count for fact, count in missing.items() if count}

    def _count(self, query: list[Any] | None) -> int:
        extract: list[Any] = ["extract", [["function", "count"]]]
        rows = self._run_query(["from", "inventory", extract + ([query] if query else [])])
        return int(rows[0]["count"]) if rows else 0

    def _facts(self) -> Iterator[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
        for node in self._active():
            yield node.certname, node.facts, trusted_facts(node.certname)


def trusted_facts(certname: str) -> dict[str, Any]:
    """What Puppet calls the node's trusted facts: what its certificate proves."""
    return {"authenticated": "remote", "certname": certname, "extensions": {}}
