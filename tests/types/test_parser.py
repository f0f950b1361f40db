"""Reading and printing types: cases/parse_error (text, error) and cases/format (text, form)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podium.errors import ValidationError
from podium.types import (
    ArrayType,
    EnumType,
    IntegerType,
    OptionalType,
    PatternType,
    StringType,
    StructMember,
    StructType,
    TupleType,
    TypeAliases,
    TypeSyntaxError,
    UnknownType,
    format_type,
    parse_type,
)

CASES = Path(__file__).parent / "cases"
ERRORS = sorted((CASES / "parse_error").glob("*.json"))
FORMATS = sorted((CASES / "format").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    return case


def _aliases(case: dict[str, Any]) -> TypeAliases | None:
    return TypeAliases(case["aliases"]) if "aliases" in case else None


@pytest.mark.parametrize("path", ERRORS, ids=[p.stem for p in ERRORS])
def test_parse_error_case(path: Path) -> None:
    case = _load(path)
    with pytest.raises((TypeSyntaxError, UnknownType)) as info:
        parse_type(case["type"], _aliases(case))
    assert case["error"] in str(info.value)


@pytest.mark.parametrize("path", FORMATS, ids=[p.stem for p in FORMATS])
def test_format_case(path: Path) -> None:
    case = _load(path)
    aliases = _aliases(case)
    t = parse_type(case["type"], aliases)
    assert format_type(t) == case["formatted"]
    assert parse_type(case["formatted"], aliases) == t


def test_there_are_enough_cases() -> None:
    assert len(ERRORS) >= 40
    assert len(FORMATS) >= 30


def test_syntax_error_has_position_expected_and_caret() -> None:
    with pytest.raises(TypeSyntaxError) as info:
        parse_type("Integer[1,")
    error = info.value
    assert (error.text, error.position, error.expected) == (
        "Integer[1,",
        10,
        "a number, 'default' or ']'",
    )
    assert str(error) == (
        "invalid type \"Integer[1,\": expected a number, 'default' or ']' at column 11\n"
        "  Integer[1,\n"
        "            ^"
    )


def test_syntax_error_is_a_validation_error_for_the_api() -> None:
    with pytest.raises(ValidationError) as info:
        parse_type("Array[")
    body = info.value.to_dict()
    assert body["kind"] == "puppetlabs.orchestrator/validation-error"
    assert body["details"] == {
        "type": "Array[",
        "position": 6,
        "expected": "a type, a number or 'default'",
    }


def test_syntax_error_in_multiline_text_names_the_line() -> None:
    text = "Struct[{\n  a => Integer,\n  b => String 5,\n}]"
    with pytest.raises(TypeSyntaxError) as info:
        parse_type(text)
    assert str(info.value) == (
        'invalid type "Struct[{ a => Integer, b => String 5, }]": '
        "expected ',' or '}' at line 3, column 15\n"
        "    b => String 5,\n"
        "                ^"
    )


def test_syntax_error_in_long_text_shows_a_window_at_the_position() -> None:
    text = "Struct[{" + ", ".join(f"k{i} => String" for i in range(20)) + ", x => Strng}]"
    with pytest.raises(UnknownType):
        parse_type(text)
    with pytest.raises(TypeSyntaxError) as info:
        parse_type(text.replace("Strng}", "String ]"))
    excerpt, caret = str(info.value).splitlines()[1:]
    assert excerpt.startswith("  …") and excerpt.endswith("x => String ]]")
    assert caret.index("^") == excerpt.index("]")


def test_unknown_type_names_a_suggestion() -> None:
    with pytest.raises(UnknownType) as info:
        parse_type("Hash[String, Integr]")
    assert (info.value.name, info.value.suggestion, info.value.position) == (
        "Integr",
        "Integer",
        13,
    )


def test_unknown_type_without_close_name_has_no_suggestion() -> None:
    with pytest.raises(UnknownType) as info:
        parse_type("Frobnicator")
    assert info.value.suggestion is None
    assert str(info.value) == "unknown type Frobnicator"


def test_unknown_alias_suggests_a_defined_alias() -> None:
    aliases = TypeAliases({"Mymod::Port": "Integer[1, 65535]"})
    with pytest.raises(UnknownType) as info:
        parse_type("Mymod::Prot", aliases)
    assert info.value.suggestion == "Mymod::Port"


def test_parses_struct_members_with_their_presence() -> None:
    t = parse_type("Struct[{a => Integer, Optional[b] => String, NotUndef['c'] => Undef}]")
    assert isinstance(t, StructType)
    assert [(m.name, m.presence) for m in t.members] == [
        ("a", "auto"),
        ("b", "optional"),
        ("c", "required"),
    ]
    assert [m.required for m in t.members] == [True, False, True]


def test_parses_bounds_into_the_tree() -> None:
    assert parse_type("Integer[default, -3]") == IntegerType(None, -3)
    assert parse_type("String[2]") == StringType(2, None)
    assert parse_type("Array[String, 1, 4]") == ArrayType(StringType(), 1, 4)
    assert parse_type("Tuple[String, 1]") == TupleType((StringType(),), 1, None)


def test_optional_of_a_string_is_an_enum_of_one() -> None:
    assert parse_type("Optional['present']") == OptionalType(EnumType(("present",)))


def test_pattern_keeps_the_ruby_source_and_compares_by_it() -> None:
    t = parse_type("Pattern[/\\A[a-z]+\\z/]")
    assert isinstance(t, PatternType)
    assert t.patterns[0].source == "\\A[a-z]+\\z"
    assert t == parse_type("Pattern['\\A[a-z]+\\z']")
    assert hash(t) == hash(parse_type("Pattern['\\A[a-z]+\\z']"))


def test_trees_are_hashable_and_compare_by_value() -> None:
    texts = ["Struct[{a => Array[Integer[0, 5]]}]", "Variant[String, Enum[x, y, true]]"]
    assert {parse_type(t) for t in texts} == {parse_type(t) for t in reversed(texts)}
    assert StructType((StructMember("a", ArrayType(IntegerType(0, 5))),)) == parse_type(texts[0])


def test_parsed_types_are_cached_per_text_and_alias_set() -> None:
    aliases = TypeAliases({"Mymod::Port": "Integer[1, 65535]"})
    assert parse_type("Array[String]") is parse_type("Array[String]")
    assert parse_type("Mymod::Port", aliases) is parse_type("Mymod::Port", aliases)
    other = TypeAliases({"Mymod::Port": "Integer[1, 1024]"})
    assert parse_type("Mymod::Port", other) != parse_type("Mymod::Port", aliases)


def test_keywords_are_allowed_as_struct_keys_but_not_as_bare_enum_values() -> None:
    assert format_type(parse_type("Struct[{type => String}]")) == "Struct[{'type' => String}]"
    assert format_type(parse_type("Enum['type']")) == "Enum['type']"
    with pytest.raises(TypeSyntaxError):
        parse_type("Enum[type]")


def test_unicode_escapes_in_double_quoted_strings() -> None:
    assert parse_type('Enum["\\u{1F600}", "\\u00e9", "\\s"]') == EnumType(("😀", "é", " "))
    with pytest.raises(TypeSyntaxError, match="not a character"):
        parse_type('Enum["\\u{D800}"]')


def test_control_characters_print_as_escapes_and_read_back() -> None:
    t = EnumType(("a\x00b\x1bc\td",))
    assert format_type(t) == 'Enum["a\\u{0}b\\u{1B}c\\td"]'
    assert parse_type(format_type(t)) == t
