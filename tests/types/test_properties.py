"""Properties of the type system over generated trees, texts and values (hypothesis).

Printing a tree and reading it back gives the same tree; no text makes the parser fail
with anything but its own errors; values generated to fit a type are instances of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.types import (
    AliasType,
    AnyType,
    ArrayType,
    BooleanType,
    CollectionType,
    DataType,
    DefaultType,
    EnumType,
    FloatType,
    HashType,
    IntegerType,
    IterableType,
    NotUndefType,
    NumericType,
    OptionalType,
    PatternType,
    PType,
    Regex,
    RegexpType,
    ScalarDataType,
    ScalarType,
    SensitiveType,
    StringType,
    StructMember,
    StructType,
    TargetSpecType,
    TupleType,
    TypeAliases,
    TypeSyntaxError,
    UndefType,
    UnknownType,
    VariantType,
    accepts_undef,
    check,
    format_type,
    parse_type,
)
from podium.types.parser import MAX_DEPTH

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALIASES = TypeAliases(
    {
        "Mymod::Port": "Integer[1, 65535]",
        "Mymod::Name": "Pattern[/\\A[a-z]+\\z/]",
        "Mymod::Tree": "Variant[String, Array[Mymod::Tree]]",
    }
)
# Ruby regexes, with strings each finds a match in.
REGEXES: dict[str, list[str]] = {
    "\\A[a-z]+\\z": ["abc", "z"],
    "^a/b$": ["a/b", "x\na/b"],
    "\\d{2,}": ["12", "x345"],
    "\\A(?<w>\\h+)-\\k<w>\\z": ["ab-ab", "0F-0F"],
    "\\A[[:alpha:]_]+\\Z": ["a_B", "xy\n"],
    "(?i)yes|no": ["YES", "No"],
    "\\A[+--]+\\z": ["+,-", ","],
}
_INT64 = 2**63


# -- trees -----------------------------------------------------------------------------

names = st.text(min_size=1, max_size=6)
regexes = st.sampled_from(sorted(REGEXES)).map(Regex.from_ruby)


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int | None]:
    low = draw(st.integers(0, 4))
    return low, draw(st.none() | st.integers(low, 6))


@st.composite
def integer_types(draw: st.DrawFn) -> IntegerType:
    low = draw(st.none() | st.integers(-_INT64, _INT64 - 1))
    high = st.integers(-_INT64 if low is None else low, _INT64 - 1)
    return IntegerType(low, draw(st.none() | high))


@st.composite
def float_types(draw: st.DrawFn) -> FloatType:
    finite = {"allow_nan": False, "allow_infinity": False}
    low = draw(st.none() | st.floats(**finite))
    return FloatType(low, draw(st.none() | st.floats(min_value=low, **finite)))


def leaves(*, inhabited: bool) -> st.SearchStrategy[PType]:
    """Types without type parameters; ``inhabited``: only those some JSON value is of."""
    fixed: list[PType] = [
        AnyType(),
        DataType(),
        DataType(rich=True),
        ScalarType(),
        ScalarDataType(),
        NumericType(),
        UndefType(),
        TargetSpecType(),
        BooleanType(),
        BooleanType(True),
        AliasType("Mymod::Port", ALIASES),
        AliasType("Mymod::Name", ALIASES),
    ]
    strategies: list[st.SearchStrategy[PType]] = [
        st.sampled_from(fixed),
        sizes().map(lambda s: StringType(*s)),
        sizes().map(lambda s: CollectionType(*s)),
        integer_types(),
        float_types(),
        st.builds(
            EnumType,
            st.lists(st.text(max_size=5), min_size=1, max_size=3).map(tuple),
            st.booleans(),
        ),
        st.lists(regexes, max_size=2).map(lambda r: PatternType(tuple(r))),
    ]
    if not inhabited:
        strategies.append(
            st.sampled_from([DefaultType(), RegexpType(), AliasType("Mymod::Tree", ALIASES)])
        )
        strategies.append(regexes.map(RegexpType))
    return st.one_of(strategies)


@st.composite
def structs(draw: st.DrawFn, children: st.SearchStrategy[PType]) -> StructType:
    keys = draw(st.lists(names, unique=True, max_size=4))
    presence = st.sampled_from(["auto", "optional", "required"])
    return StructType(tuple(StructMember(k, draw(children), draw(presence)) for k in keys))


@st.composite
def tuples(draw: st.DrawFn, children: st.SearchStrategy[PType]) -> TupleType:
    types = tuple(draw(st.lists(children, min_size=1, max_size=3)))
    if draw(st.booleans()):
        return TupleType(types)
    return TupleType(types, *draw(sizes()))


def types(*, inhabited: bool = False) -> st.SearchStrategy[PType]:
    """Type trees; ``inhabited``: only types with JSON instances, and Hash keys strings."""

    def extend(children: st.SearchStrategy[PType]) -> st.SearchStrategy[PType]:
        # A NotUndef of a type whose only instance is undef would have none.
        defined = children.filter(lambda t: not accepts_undef(t)) if inhabited else children
        # Keys of an open length: a hash of a few entries needs as many keys.
        keys = st.integers(0, 3).map(StringType) if inhabited else children
        return st.one_of(
            st.builds(OptionalType, children),
            st.builds(NotUndefType, defined),
            st.builds(SensitiveType, children),
            st.builds(IterableType, children),
            st.lists(children, min_size=1, max_size=3).map(lambda m: VariantType(tuple(m))),
            st.builds(lambda e, s: ArrayType(e, *s), children, sizes()),
            st.builds(lambda k, v, s: HashType(k, v, *s), keys, children, sizes()),
            structs(children),
            tuples(children),
        )

    return st.recursive(leaves(inhabited=inhabited), extend, max_leaves=12).filter(
        lambda t: _depth(t) < MAX_DEPTH
    )


def _children(t: PType) -> Iterator[PType]:
    for f in fields(t):  # type: ignore[arg-type]
        value = getattr(t, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, PType):
                yield item
            elif isinstance(item, StructMember):
                yield item.type


def _depth(t: PType) -> int:
    return 1 + max((_depth(c) for c in _children(t)), default=0)


@SETTINGS
@given(types())
def test_printing_then_parsing_gives_the_same_tree(t: PType) -> None:
    assert parse_type(format_type(t), ALIASES) == t


# -- fuzzing the parser ----------------------------------------------------------------

_PIECES = [
    "Integer", "String", "Float", "Array", "Hash", "Struct", "Tuple", "Enum", "Pattern",
    "Optional", "NotUndef", "Variant", "Sensitive", "Regexp", "Boolean", "Iterable",
    "Mymod::Port", "Mymod::Tree", "Timestamp", "default", "true", "undef", "if", "a",
    "[", "]", "{", "}", ",", "=>", "'", '"', "/", "\\", "#", "/*", "*/", "\n", " ", "-",
    "0", "1", "-5", "0x1f", "08", "1.5", "1e400", "$x", "\\u{", "(?<n>", "(?i)", "\\z",
    "[[:alpha:]]", "&&", "(", ")", "*", "{2,}",
]  # fmt: skip
_texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(_PIECES), max_size=30).map("".join),
)


def _mutations(text: str) -> st.SearchStrategy[str]:
    """``text`` with a slice removed and a piece put in its place."""

    def cut(cut_at: tuple[int, int], piece: str) -> str:
        start, length = cut_at
        return text[:start] + piece + text[start + length :]

    at = st.tuples(st.integers(0, len(text)), st.integers(0, 3))
    return st.builds(cut, at, st.sampled_from(_PIECES) | st.text(max_size=2))


def _parses_or_says_why(text: str) -> None:
    try:
        t = parse_type(text, ALIASES)
    except (TypeSyntaxError, UnknownType) as exc:
        assert exc.msg  # a message, and nothing but the parser's own errors
        return
    assert parse_type(format_type(t), ALIASES) == t


@SETTINGS
@given(_texts)
def test_any_text_parses_or_fails_with_a_parse_error(text: str) -> None:
    _parses_or_says_why(text)


@SETTINGS
@given(types().map(format_type).flatmap(_mutations))
def test_damaged_type_text_parses_or_fails_with_a_parse_error(text: str) -> None:
    _parses_or_says_why(text)


# -- values that fit -------------------------------------------------------------------

_finite = st.floats(allow_nan=False, allow_infinity=False)
_scalars = st.booleans() | st.integers() | _finite | st.text(max_size=5)
_json = st.recursive(
    st.none() | _scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=8,
)
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _up_to(high: int | None, low: int) -> int:
    return low + 3 if high is None else high


def instances(t: PType) -> st.SearchStrategy[Any]:
    """Values of type ``t`` (built by ``types(inhabited=True)``)."""
    simple: dict[type[PType], st.SearchStrategy[Any]] = {
        AnyType: _json,
        DataType: _json,
        ScalarType: _scalars,
        ScalarDataType: _scalars,
        NumericType: st.integers() | _finite,
        UndefType: st.none(),
        TargetSpecType: st.recursive(st.text(min_size=1, max_size=4), st.lists, max_leaves=5),
    }
    if type(t) in simple:
        return simple[type(t)]
    strategy: Callable[[Any], st.SearchStrategy[Any]] = _STRATEGIES[type(t)]
    return strategy(t)


def _tuple_values(t: TupleType) -> st.SearchStrategy[list[Any]]:
    def elements(n: int) -> st.SearchStrategy[list[Any]]:
        return st.tuples(*(instances(t.types[min(i, len(t.types) - 1)]) for i in range(n))).map(
            list
        )

    if t.min is None:
        return elements(len(t.types))
    return st.integers(t.min, _up_to(t.max, max(t.min, len(t.types)))).flatmap(elements)


def _enum_values(t: EnumType) -> st.SearchStrategy[str]:
    values = st.sampled_from(t.values)
    return (
        values | values.map(lambda v: v.translate(_ASCII_UPPER)) if t.case_insensitive else values
    )


_STRATEGIES: dict[type[PType], Callable[[Any], st.SearchStrategy[Any]]] = {
    BooleanType: lambda t: st.booleans() if t.value is None else st.just(t.value),
    StringType: lambda t: st.text(min_size=t.min, max_size=_up_to(t.max, t.min)),
    IntegerType: lambda t: st.integers(t.min, t.max),
    FloatType: lambda t: st.floats(t.min, t.max, allow_nan=False, allow_infinity=False),
    EnumType: _enum_values,
    PatternType: lambda t: (
        st.sampled_from([s for r in t.patterns for s in REGEXES[r.source]])
        if t.patterns
        else st.text(max_size=4)
    ),
    OptionalType: lambda t: st.none() | instances(t.type),
    NotUndefType: lambda t: instances(t.type),
    SensitiveType: lambda t: instances(t.type),
    AliasType: lambda t: instances(t.resolved),
    VariantType: lambda t: st.one_of([instances(m) for m in t.types]),
    ArrayType: lambda t: st.lists(
        instances(t.element), min_size=t.min, max_size=_up_to(t.max, t.min)
    ),
    HashType: lambda t: st.dictionaries(
        instances(t.key), instances(t.value), min_size=t.min, max_size=_up_to(t.max, t.min)
    ),
    StructType: lambda t: st.fixed_dictionaries(
        {m.name: instances(m.type) for m in t.members if m.required},
        optional={m.name: instances(m.type) for m in t.members if not m.required},
    ),
    TupleType: _tuple_values,
    CollectionType: lambda t: st.one_of(
        st.lists(_json, min_size=t.min, max_size=_up_to(t.max, t.min)),
        st.dictionaries(st.text(max_size=3), _json, min_size=t.min, max_size=_up_to(t.max, t.min)),
    ),
    IterableType: lambda t: (
        st.text(max_size=4) | st.integers(0, 50) | st.lists(_json, max_size=3)
        if t.element == AnyType()
        else st.lists(instances(t.element), max_size=3)
    ),
}


@SETTINGS
@given(types(inhabited=True).flatmap(lambda t: st.tuples(st.just(t), instances(t))))
def test_values_generated_to_fit_a_type_are_accepted(case: tuple[PType, Any]) -> None:
    t, value = case
    assert check(t, value) is None, check(t, value)


@SETTINGS
@given(st.recursive(st.text(max_size=3), st.lists, max_leaves=10))
def test_recursive_alias_accepts_every_finite_tree(value: Any) -> None:
    assert check(parse_type("Mymod::Tree", ALIASES), value) is None
