"""Rules: the grammar case by case (``cases/rules/*.json``), pins, PuppetDB queries, and
properties of the matcher on random rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.classifier.rules import (
    OPERATORS,
    RuleError,
    compile_rule,
    match_rule,
    pin,
    pinned_nodes,
    rule_to_ast,
    rule_to_nodes_query,
    split_pins,
    unpin,
    validate_rule,
)

CASES = sorted((Path(__file__).parent / "cases" / "rules").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    return case


def test_there_is_a_case_for_every_operator_and_enough_cases():
    rules_text = " ".join(p.read_text() for p in CASES)
    assert len(CASES) >= 40
    for op in OPERATORS:
        assert f'"{op}"' in rules_text, op


@pytest.mark.parametrize("path", [p for p in CASES if "error" not in load(p)], ids=lambda p: p.stem)
def test_rule_case_matches_as_expected(path: Path):
    case = load(path)
    node = case["node"]
    assert (
        match_rule(case["rule"], node["certname"], node["facts"], node["trusted"]) is case["match"]
    )
    # not inverts every case
    inverted = ["not", case["rule"]]
    assert (
        match_rule(inverted, node["certname"], node["facts"], node["trusted"]) is not case["match"]
    )
    if "ast" in case:
        assert rule_to_ast(case["rule"]) == case["ast"]


@pytest.mark.parametrize("path", [p for p in CASES if "error" in load(p)], ids=lambda p: p.stem)
def test_malformed_rule_case_is_refused_naming_the_bad_part(path: Path):
    case = load(path)
    with pytest.raises(RuleError) as caught:
        validate_rule(case["rule"])
    assert case["error"] in caught.value.msg
    assert caught.value.details["path"] == case["path"]
    assert f"at {case['path']}:" in caught.value.msg
    assert caught.value.kind == "schema-violation"
    with pytest.raises(RuleError):
        rule_to_ast(case["rule"])


def test_a_rule_nested_too_deep_is_refused_not_a_crash():
    rule: Any = ["=", "name", "a"]
    for _ in range(200):
        rule = ["not", rule]
    with pytest.raises(RuleError, match="nested more than"):
        validate_rule(rule)


def test_a_compiled_rule_is_reused_across_nodes():
    matcher = compile_rule(["~", ["fact", "role"], "^web"])
    assert [
        matcher(n, {"role": r}, {}) for n, r in [("a", "web"), ("b", "db"), ("c", "webapp")]
    ] == [
        True,
        False,
        True,
    ]


# -- pins -----------------------------------------------------------------------------


def test_pinning_wraps_a_rule_in_an_or_as_pe_does():
    rule = ["=", ["fact", "os", "family"], "Debian"]
    pinned = pin(rule, ["web-01", "web-02", "web-01"])
    assert pinned == ["or", rule, ["=", "name", "web-01"], ["=", "name", "web-02"]]
    assert pinned_nodes(pinned) == ["web-01", "web-02"]
    assert pin(pinned, ["web-02"]) == pinned  # already pinned: unchanged
    assert pin(pinned, ["db-01"]) == [*pinned, ["=", "name", "db-01"]]


def test_pinning_to_a_group_without_rule_makes_an_or_of_pins():
    assert pin(None, ["web-01"]) == ["or", ["=", "name", "web-01"]]
    assert pinned_nodes(["or", ["=", "name", "web-01"]]) == ["web-01"]
    assert pinned_nodes(["=", "name", "web-01"]) == ["web-01"]


def test_unpinning_restores_the_rule_and_ignores_nodes_not_pinned():
    rule = ["=", ["fact", "os", "family"], "Debian"]
    pinned = pin(rule, ["web-01", "web-02"])
    assert unpin(pinned, ["web-01", "never-pinned"]) == ["or", rule, ["=", "name", "web-02"]]
    assert unpin(pinned, ["web-01", "web-02"]) == rule
    assert unpin(pin(None, ["a"]), ["a"]) is None
    assert unpin(rule, ["a"]) == rule
    assert unpin(["=", "name", "a"], ["a"]) is None


def test_pins_appended_to_an_or_rule_keep_its_terms():
    rule = ["or", ["~", "name", "^web"], ["~", "name", "^db"]]
    pinned = pin(rule, ["mail-01"])
    assert pinned == [*rule, ["=", "name", "mail-01"]]
    assert split_pins(pinned) == (rule, ["mail-01"])
    assert split_pins(None) == (None, [])


def test_a_pinned_node_matches_whatever_its_facts():
    rule = pin(["=", ["fact", "os", "family"], "RedHat"], ["web-01"])
    assert match_rule(rule, "web-01", {"os": {"family": "Debian"}}, {})
    assert not match_rule(rule, "web-02", {"os": {"family": "Debian"}}, {})


# -- PuppetDB queries -----------------------------------------------------------------


def test_rule_to_ast_translates_to_the_inventory_entity():
    rule = ["and", ["=", ["fact", "os", "family"], "Debian"], ["~", "name", "^web"]]
    assert rule_to_ast(rule) == [
        "and",
        ["=", "facts.os.family", "Debian"],
        ["~", "certname", "^web"],
    ]
    assert rule_to_ast(["!~", ["trusted", "extensions", "pp_role"], "db"]) == [
        "not",
        ["~", "trusted.extensions.pp_role", "db"],
    ]
    assert rule_to_ast([">=", ["fact", "processors", "count"], "2"]) == [
        ">=",
        "facts.processors.count",
        2,
    ]
    assert rule_to_ast(["=", ["fact", 'we"ird key'], "x"]) == ["=", 'facts."we\\"ird key"', "x"]


def test_rule_to_nodes_query_uses_fact_contents_subqueries():
    assert rule_to_nodes_query(["=", ["fact", "os", "family"], "Debian"]) == [
        "in",
        "certname",
        [
            "extract",
            "certname",
            [
                "select_fact_contents",
                ["and", ["=", "path", ["os", "family"]], ["=", "value", "Debian"]],
            ],
        ],
    ]
    trusted = rule_to_nodes_query(["!=", ["trusted", "extensions", "pp_role"], "db"])
    assert trusted[0] == "not"
    assert trusted[1][2][2][1][1] == ["=", "path", ["trusted", "extensions", "pp_role"]]
    assert rule_to_nodes_query(["~", "name", "^web"]) == ["~", "certname", "^web"]
    assert rule_to_nodes_query([">", ["fact", "models", "0"], "1"])[2][2][1] == [
        "and",
        ["=", "path", ["models", 0]],
        [">", "value", 1],
    ]


# -- properties -----------------------------------------------------------------------

_scalars = st.one_of(
    st.text(max_size=8), st.integers(-5, 5), st.booleans(), st.none(), st.floats(allow_nan=False)
)
_fields = st.one_of(
    st.sampled_from(["name", "hostname", 3]),
    st.lists(
        st.one_of(
            st.sampled_from(["fact", "trusted", "os", "family", "count", "0"]), st.integers(-1, 2)
        ),
        max_size=4,
    ),
)
_leaves = st.builds(
    lambda op, field, value: [op, field, value],
    st.sampled_from([*OPERATORS, "like"]),
    _fields,
    st.one_of(_scalars, st.sampled_from(["^web", "(", "[a-", "2", "Debian"])),
)
_rules = st.recursive(
    st.one_of(_leaves, _scalars),
    lambda inner: st.one_of(
        st.builds(
            lambda op, terms: [op, *terms],
            st.sampled_from(["and", "or", "not"]),
            st.lists(inner, max_size=3),
        ),
        st.lists(inner, max_size=3),
    ),
    max_leaves=12,
)
_facts = st.fixed_dictionaries(
    {},
    optional={
        "os": st.one_of(st.fixed_dictionaries({"family": _scalars}), _scalars),
        "count": st.one_of(_scalars, st.sampled_from(["2", "10", "2.5"])),
        "0": st.lists(_scalars, max_size=2),
    },
)
# No deadline and no size/speed health checks: a loaded 2-core CI machine must not fail.
_PROFILE = settings(
    deadline=None,
    max_examples=300,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@_PROFILE
@given(rule=_rules, facts=_facts)
def test_random_rules_match_or_are_refused_never_crash(rule: Any, facts: dict[str, Any]):
    try:
        matcher = compile_rule(rule)
    except RuleError as exc:
        assert exc.details["path"].startswith("rule")
        return
    result = matcher("web-01", facts, {"certname": "web-01"})
    assert isinstance(result, bool)
    assert rule_to_ast(rule)  # whatever validates translates


@_PROFILE
@given(rule=_rules, facts=_facts)
def test_not_inverts_every_valid_rule(rule: Any, facts: dict[str, Any]):
    try:
        validate_rule(rule)
    except RuleError:
        return
    assert match_rule(["not", rule], "n", facts, {}) is not match_rule(rule, "n", facts, {})


@_PROFILE
@given(rule=_rules, names=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3))
def test_pinned_nodes_always_match_and_unpinning_restores_the_rest(rule: Any, names: list[str]):
    try:
        validate_rule(rule)
    except RuleError:
        return
    pinned = pin(rule, names)
    validate_rule(pinned)
    for name in names:
        assert match_rule(pinned, name, {}, {})
    assert set(names) <= set(pinned_nodes(pinned))
    rest = unpin(pinned, names)
    for facts in ({}, {"os": {"family": "Debian"}, "count": "2"}):
        restored = rest is not None and match_rule(rest, "d", facts, {})
        assert restored is match_rule(pinned, "d", facts, {})
