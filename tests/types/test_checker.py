"""Checking values: cases/check (type, value, ok, message) and what the cases cannot hold."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from podium.types import (
    Mismatch,
    TypeAliases,
    accepts_undef,
    check,
    is_sensitive,
    parse_type,
)
from podium.types.checker import MAX_DEPTH

CASES = sorted((Path(__file__).parent / "cases" / "check").glob("*.json"))

# Every type of the brief, for properties that hold for all of them.
ALL_TYPES = [
    "Any", "Data", "RichData", "Scalar", "ScalarData", "String", "Integer", "Float",
    "Numeric", "Boolean", "Enum['a']", "Pattern[/./]", "Regexp", "Optional[Float]",
    "NotUndef", "Variant[Float, String]", "Array", "Array[Float]", "Hash",
    "Hash[String, Float]", "Struct[{a => Float}]", "Tuple[Float]", "Undef",
    "Sensitive[Float]", "TargetSpec", "Collection", "Iterable", "Iterable[Float]",
    "Default",
]  # fmt: skip


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_check_case(path: Path) -> None:
    case = json.loads(path.read_text())
    aliases = TypeAliases(case["aliases"]) if "aliases" in case else None
    mismatch = check(parse_type(case["type"], aliases), case["value"])
    if case["ok"]:
        assert mismatch is None, mismatch
    else:
        assert mismatch is not None
        described = mismatch.describe(case.get("name", ""), redact=case.get("redact", False))
        assert described == case["message"]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 120


@pytest.mark.parametrize("text", ALL_TYPES)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_no_type_accepts_nan_or_infinity(text: str, value: float) -> None:
    for wrapped in (value, [value], {"a": value}):
        assert check(parse_type(text), wrapped) is not None


@pytest.mark.parametrize("text", ["Data", "Any", "Optional[Data]", "Hash[String, Data]"])
def test_nan_deep_inside_data_is_found_with_its_path(text: str) -> None:
    mismatch = check(parse_type(text), {"a": [1, {"b": math.nan}]})
    assert mismatch is not None
    assert mismatch.path[-3:] == ("a", 1, "b")
    assert mismatch.describe().endswith(", got NaN")


def test_data_refuses_keys_that_are_no_strings_and_values_that_are_no_json() -> None:
    data = parse_type("Data")
    assert check(data, {0: "x"}) == Mismatch((), "String", 0, problem="key")
    mismatch = check(data, {"a": {1, 2}})
    assert mismatch is not None and mismatch.path == ("a",)
    assert check(parse_type("Any"), {"a": {1, 2}}) is None


@pytest.mark.parametrize(
    "text", ["Data", "Any", "Array", "Array[Data]", "TargetSpec", "Iterable", "Collection"]
)
def test_deep_values_are_mismatches_not_recursion_errors(text: str) -> None:
    assert check(parse_type(text), _deep(MAX_DEPTH // 2)) is None
    mismatch = check(parse_type(text), _deep(100_000))
    assert mismatch is not None and mismatch.problem == "too_deep"
    assert mismatch.describe("x").endswith("got a value nested too deeply to check")
    assert "…" in mismatch.describe("x")  # the path is shortened


def test_deep_values_against_recursive_aliases_are_mismatches() -> None:
    aliases = TypeAliases(
        {
            "Mymod::Tree": "Variant[String, Array[Mymod::Tree]]",
            "Mymod::Node": "Struct[{Optional[child] => Mymod::Node}]",
        }
    )
    tree, node = parse_type("Mymod::Tree", aliases), parse_type("Mymod::Node", aliases)
    assert check(tree, _deep(20)) is None
    deep_tree = check(tree, _deep(100_000))
    assert deep_tree is not None and deep_tree.problem == "too_deep"
    nested: dict[str, Any] = {}
    for _ in range(100_000):
        nested = {"child": nested}
    deep_node = check(node, nested)
    assert deep_node is not None and deep_node.problem == "too_deep"


def test_mismatch_records_path_expected_and_got() -> None:
    t = parse_type("Struct[{hosts => Array[Struct[{port => Integer[1, 65535]}]]}]")
    mismatch = check(t, {"hosts": [{"port": 80}, {"port": 0}]})
    assert mismatch == Mismatch(("hosts", 1, "port"), "Integer[1, 65535]", 0)
    assert mismatch.describe("params") == "params.hosts[1].port: expected Integer[1, 65535], got 0"


def test_missing_and_unexpected_keys_are_told_apart() -> None:
    t = parse_type("Struct[{a => Integer, b => String}]")
    missing = check(t, {"a": 1})
    assert missing is not None
    assert (missing.problem, missing.key, missing.expected) == ("missing_key", "b", "String")
    unexpected = check(t, {"a": 1, "b": "x", "c": True})
    assert unexpected is not None
    assert (unexpected.problem, unexpected.key, unexpected.got) == ("unexpected_key", "c", True)
    assert unexpected.known_keys == ("a", "b")


def test_describe_without_name_or_path() -> None:
    mismatch = check(parse_type("Integer"), "x")
    assert mismatch is not None
    assert mismatch.describe() == 'expected Integer, got "x"'
    assert mismatch.describe("count") == 'count: expected Integer, got "x"'


def test_describe_redacts_every_kind_of_value() -> None:
    t = parse_type("Integer")
    expected = {
        "s": "a String",
        1.5: "a Float",
        True: "a Boolean",
        (1,): "a tuple",
        "[]": "a String",
    }
    for value, kind in expected.items():
        mismatch = check(t, value)
        assert mismatch is not None
        assert (
            mismatch.describe("x", redact=True)
            == f"x: expected Integer, got {kind} (value redacted)"
        )
    array, hash_ = check(t, [1]), check(t, {"k": "v"})
    assert array is not None and hash_ is not None
    assert array.describe(redact=True) == "expected Integer, got an Array (value redacted)"
    assert hash_.describe(redact=True) == "expected Integer, got a Hash (value redacted)"


def test_describe_cuts_long_values_without_encoding_them_whole() -> None:
    mismatch = check(parse_type("String"), list(range(1_000_000)))
    assert mismatch is not None
    shown = mismatch.describe().removeprefix("expected String, got ")
    assert len(shown) == 60 and shown.endswith("…")


def test_describe_shows_values_that_are_no_json_with_repr() -> None:
    mismatch = check(parse_type("String"), {("a", "b"): 1})
    assert mismatch is not None
    assert mismatch.describe() == "expected String, got {('a', 'b'): 1}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Optional[String]", True),
        ("Undef", True),
        ("Any", True),
        ("Data", True),
        ("RichData", True),
        ("Variant[Integer, Undef]", True),
        ("Variant[Integer, Optional[String]]", True),
        ("Sensitive[Optional[String]]", True),
        ("NotUndef[Optional[String]]", False),
        ("String", False),
        ("Scalar", False),
        ("Array[Optional[String]]", False),
        ("Struct[{a => Optional[String]}]", False),
        ("TargetSpec", False),
    ],
)
def test_accepts_undef(text: str, expected: bool) -> None:
    t = parse_type(text)
    assert accepts_undef(t) is expected
    assert (check(t, None) is None) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sensitive[String]", True),
        ("Sensitive", True),
        ("Optional[Sensitive[String]]", True),
        ("NotUndef[Sensitive[String]]", True),
        ("Variant[Sensitive[String], Undef]", True),
        ("String", False),
        ("Array[Sensitive[String]]", False),
        ("Struct[{password => Sensitive[String]}]", False),
    ],
)
def test_is_sensitive(text: str, expected: bool) -> None:
    assert is_sensitive(parse_type(text)) is expected


def test_integer_is_not_confused_by_python_bools_being_ints() -> None:
    for text in ("Integer", "Integer[0, 1]", "Numeric", "Float", "Iterable", "Enum['True']"):
        assert check(parse_type(text), True) is not None
    assert check(parse_type("ScalarData"), True) is None


def test_float_bounds_accept_floats_only() -> None:
    t = parse_type("Float[0, 10]")
    assert check(t, 5.0) is None
    assert check(t, 5) is not None
    assert check(parse_type("Numeric"), 5) is None


def test_checking_many_values_against_a_struct() -> None:
    t = parse_type(
        "Struct[{name => String[1], port => Integer[1, 65535], Optional[tags] => Array[String]}]"
    )
    values = [{"name": f"n{i}", "port": i % 65535 + 1, "tags": ["a"]} for i in range(10_000)]
    assert all(check(t, v) is None for v in values)
    values[5_000]["port"] = 0
    assert [i for i, v in enumerate(values) if check(t, v)] == [5_000]
