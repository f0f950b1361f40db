"""A job's scope → its certnames: one pure step, with nothing left out silently."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from podium.errors import ValidationError
from podium.inventory.targeting import Scope, parse_scope, resolve

FLEET = ["db-01", "web-01", "web-02", "web-10"]


class FakeInventory:
    def __init__(self) -> None:
        self.queries: list[Any] = []

    def active_certnames(self) -> list[str]:
        return list(FLEET)

    def query_certnames(self, query: str | list[Any]) -> list[str]:
        self.queries.append(query)
        return ["web-02", "web-01"]

    def group_members(self, group_id: str) -> list[str]:
        return ["db-01"] if group_id == "g1" else []

    def class_members(self, classes: Sequence[str]) -> list[str]:
        return ["web-01", "db-01"]

    def lacking(self, facts: Sequence[str]) -> dict[str, int]:
        return dict.fromkeys(facts, 1)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "names no nodes"),
        ({"nodes": ["a"], "query": "nodes {}"}, "give exactly one of"),
        ({"nodes": ["a"], "node_group": "g"}, "give exactly one of"),
        ({"nodes": "a"}, "must be a list"),
        ({"query": 5}, "PQL text or a PuppetDB AST"),
        ({"node_group": ""}, "a node group's id"),
        ({"hosts": ["a"]}, r"unknown field\(s\) hosts"),
        ({"application": "App[x]"}, "not supported"),
        ({"nodes": ["a"], "classes": ["x"]}, "classes may narrow a query"),
        ("nodes", "must be an object"),
    ],
)
def test_a_scope_names_exactly_one_target(raw: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_scope(raw)


def test_node_lists_drop_duplicates_and_expand_globs_against_the_inventory() -> None:
    scope = parse_scope({"nodes": ["web-01", "web-0*", "db-01", "web-01", "mail*"]})
    target = resolve(scope, FakeInventory())
    assert target.certnames == ("web-01", "web-02", "db-01")
    assert target.duplicates == ("web-01",)
    assert target.unmatched == ("mail*",)


def test_a_query_resolves_through_the_inventory_and_counts_nodes_lacking_its_facts() -> None:
    inventory = FakeInventory()
    ast = ["from", "inventory", ["and", ["=", "facts.os.family", "Debian"], [">", "facts.x.y", 1]]]
    target = resolve(parse_scope({"query": ast}), inventory)
    assert target.certnames == ("web-01", "web-02")
    assert target.missing_facts == {"os.family": 1, "x.y": 1}
    assert inventory.queries == [ast]


def test_a_node_group_and_classes_resolve_to_their_members() -> None:
    assert resolve(Scope(node_group="g1"), FakeInventory()).certnames == ("db-01",)
    narrowed = resolve(Scope(query=["from", "nodes"], classes=("nginx",)), FakeInventory())
    assert narrowed.certnames == ("web-01",)


def test_an_invalid_certname_is_refused() -> None:
    with pytest.raises(ValidationError):
        resolve(Scope(nodes=("bad name!",)), FakeInventory())
