"""Type aliases: reading types/*.pp files, resolving aliases lazily, refusing loops."""

from __future__ import annotations

import pytest

from podium.errors import ValidationError
from podium.types import (
    AliasType,
    IntegerType,
    TypeAliasError,
    TypeAliases,
    UnknownType,
    accepts_undef,
    check,
    format_type,
    is_sensitive,
    parse_alias_file,
    parse_type,
)

PORT_FILE = """\
# @summary A TCP or UDP port.
type Mymod::Port = Integer[1, 65535]
"""

CONF_FILE = """\
/*
 * The settings of the service.
 */
type Mymod::Conf = Struct[{
  port              => Mymod::Port,  # where it listens
  Optional['hosts'] => Array[String[1]],
  /* no others */
}]
"""


def test_alias_file_gives_name_and_type_text() -> None:
    assert parse_alias_file(PORT_FILE, "mymod/types/port.pp") == [
        ("Mymod::Port", "Integer[1, 65535]")
    ]


def test_alias_file_may_span_lines_with_comments() -> None:
    [(name, text)] = parse_alias_file(CONF_FILE, "mymod/types/conf.pp")
    assert name == "Mymod::Conf"
    assert text.startswith("Struct[{") and text.endswith("}]")
    assert "# where it listens" in text  # the type text keeps its comments
    aliases = TypeAliases({"Mymod::Conf": text, "Mymod::Port": "Integer[1, 65535]"})
    assert format_type(aliases.resolve("Mymod::Conf")) == (
        "Struct[{'port' => Mymod::Port, Optional['hosts'] => Array[String[1]]}]"
    )


def test_alias_file_with_several_statements() -> None:
    text = "type A::B = String\ntype A::C = Array[A::B] # list\n"
    assert parse_alias_file(text, "x.pp") == [("A::B", "String"), ("A::C", "Array[A::B]")]


def test_empty_alias_file_defines_nothing() -> None:
    assert parse_alias_file("# nothing here\n", "x.pp") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type Mymod::Port = Integer[1,\n", "types/port.pp:2: expected a number, 'default' or ']'"),
        ("\n\ntype Mymod::Port Integer", "types/port.pp:3: expected '='"),
        ("class mymod {}", "types/port.pp:1: expected 'type'"),
        ("type mymod::port = String", "types/port.pp:1: expected the alias name"),
        ("type String = Integer", "types/port.pp:1: String is a built-in type"),
        ("type A::B = String\ntype A::B = Integer", "types/port.pp:2: A::B is repeated"),
        ("type A::B = Timestamp", "types/port.pp:1: Timestamp is a Puppet type"),
        (
            "type A::B = Struct[{\n  a => Integer,\n  a => String,\n}]",
            "types/port.pp:3: the member",
        ),
        ("type A::B = Enum['x", "types/port.pp:1: unterminated string"),
    ],
)
def test_alias_file_errors_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_alias_file(text, "types/port.pp")
    assert str(info.value).startswith(message)
    assert info.value.details["file"] == "types/port.pp"


def test_alias_file_error_shows_the_line_with_a_caret() -> None:
    with pytest.raises(ValidationError) as info:
        parse_alias_file("type A::B = Array[\n  Strin g]\n", "b.pp")
    assert str(info.value).splitlines()[1:] == ["    Strin g]", "          ^"]


def test_aliases_know_their_names() -> None:
    aliases = TypeAliases({"Mymod::Port": "Integer[1, 65535]", "Top": "String"})
    assert aliases.names() == {"Mymod::Port", "Top"}
    assert "Top" in aliases and "Other" not in aliases
    assert TypeAliases().names() == set()


@pytest.mark.parametrize("name", ["mymod::port", "Mymod::port", "Integer", "Timestamp", "A-B", ""])
def test_aliases_refuse_bad_or_builtin_names(name: str) -> None:
    with pytest.raises(TypeAliasError):
        TypeAliases({name: "String"})


def test_alias_of_alias_resolves() -> None:
    aliases = TypeAliases({"A::Low": "Integer[0, 9]", "A::Mid": "A::Low", "A::High": "A::Mid"})
    t = parse_type("A::High", aliases)
    assert t == AliasType("A::High", aliases)
    assert aliases.resolve("A::Low") == IntegerType(0, 9)
    assert check(t, 5) is None
    mismatch = check(t, 10)
    assert mismatch is not None and mismatch.describe() == "expected A::High, got 10"


def test_recursive_alias_checks_finite_values() -> None:
    aliases = TypeAliases(
        {"Js::Value": "Variant[ScalarData, Undef, Array[Js::Value], Hash[String, Js::Value]]"}
    )
    t = parse_type("Js::Value", aliases)
    assert check(t, {"a": [1, {"b": None, "c": ["x", 2.5]}]}) is None
    mismatch = check(t, {"a": [1, {"b": [[{"c": {1, 2}}]]}]})
    assert mismatch is not None
    assert mismatch.describe("v") == "v.a[1].b[0][0].c: expected Js::Value, got {1, 2}"
    assert accepts_undef(t)


def test_mutually_recursive_aliases_check_finite_values() -> None:
    aliases = TypeAliases(
        {
            "Fs::Dir": "Struct[{name => String, entries => Array[Fs::Entry]}]",
            "Fs::Entry": "Variant[Fs::Dir, String]",
        }
    )
    t = parse_type("Fs::Dir", aliases)
    tree = {"name": "/", "entries": ["a", {"name": "b", "entries": [{"name": "c", "entries": []}]}]}
    assert check(t, tree) is None
    tree["entries"][1]["entries"][0]["entries"] = [3]  # type: ignore[index]
    mismatch = check(t, tree)
    assert mismatch is not None
    assert mismatch.describe() == "entries[1].entries[0].entries[0]: expected Fs::Entry, got 3"


@pytest.mark.parametrize(
    ("definitions", "loop"),
    [
        ({"A::A": "A::A"}, "A::A -> A::A"),
        ({"A::A": "Variant[String, A::A]"}, "A::A -> A::A"),
        ({"A::A": "Optional[A::B]", "A::B": "Sensitive[NotUndef[A::A]]"}, "A::A -> A::B -> A::A"),
    ],
)
def test_alias_standing_for_itself_is_refused(definitions: dict[str, str], loop: str) -> None:
    aliases = TypeAliases(definitions)
    with pytest.raises(TypeAliasError) as info:
        parse_type("Array[A::A]", aliases)
    assert f"({loop})" in str(info.value)
    assert info.value.alias == "A::A"


def test_alias_with_a_bad_definition_is_named() -> None:
    aliases = TypeAliases({"Mymod::Port": "Integer[1,", "Mymod::Ok": "String"})
    with pytest.raises(TypeAliasError) as info:
        parse_type("Variant[Mymod::Ok, Mymod::Port]", aliases)
    assert str(info.value).startswith(
        'in type alias Mymod::Port: invalid type "Integer[1,": expected a number'
    )
    assert parse_type("Mymod::Ok", aliases) is not None  # a bad alias spoils only its users


def test_alias_naming_an_unknown_type_suggests_one() -> None:
    aliases = TypeAliases({"Mymod::Port": "Integer[1, 65535]", "Mymod::Conf": "Mymod::Prot"})
    with pytest.raises(TypeAliasError, match=r"did you mean Mymod::Port\?"):
        parse_type("Mymod::Conf", aliases)


def test_alias_not_in_the_set_is_unknown() -> None:
    aliases = TypeAliases({"Mymod::Port": "Integer[1, 65535]"})
    with pytest.raises(UnknownType):
        parse_type("Other::Port", aliases)
    with pytest.raises(UnknownType):
        aliases.resolve("Other::Port")


def test_alias_takes_no_parameters() -> None:
    aliases = TypeAliases({"Mymod::Port": "Integer[1, 65535]"})
    with pytest.raises(ValidationError, match="Mymod::Port takes no parameters"):
        parse_type("Mymod::Port[1]", aliases)


def test_sensitivity_and_undef_are_seen_through_aliases() -> None:
    aliases = TypeAliases(
        {"Mymod::Secret": "Sensitive[String[1]]", "Mymod::Maybe": "Optional[Mymod::Secret]"}
    )
    t = parse_type("Mymod::Maybe", aliases)
    assert is_sensitive(t) and accepts_undef(t)
    assert not accepts_undef(parse_type("Mymod::Secret", aliases))
