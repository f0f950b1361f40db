"""What each built-in type takes as parameters, and the node it makes of them.

The parser reads parameters one at a time and asks a type's *signature* which kinds
may come next (given those read so far), so an error can name what was expected there;
the type's *builder* then checks their values and makes the node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from podium.types.tree import (
    ANY,
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
    TargetSpecType,
    TupleType,
    UndefType,
    VariantType,
)

if TYPE_CHECKING:
    from podium.types.parser import Parser

LEAVES: Final[dict[str, PType]] = {
    "Any": ANY,
    "Data": DataType(),
    "RichData": DataType(rich=True),
    "Scalar": ScalarType(),
    "ScalarData": ScalarDataType(),
    "Numeric": NumericType(),
    "Undef": UndefType(),
    "Default": DefaultType(),
    "TargetSpec": TargetSpecType(),
}
# Parameterized types written bare, and those Puppet gives no meaning bare.
BARE: Final[dict[str, PType]] = {
    "String": StringType(),
    "Integer": IntegerType(),
    "Float": FloatType(),
    "Boolean": BooleanType(),
    "Pattern": PatternType(),
    "Regexp": RegexpType(),
    "Optional": OptionalType(),
    "NotUndef": NotUndefType(),
    "Sensitive": SensitiveType(),
    "Array": ArrayType(),
    "Hash": HashType(),
    "Collection": CollectionType(),
    "Iterable": IterableType(),
}
NEEDS_PARAMETERS: Final = frozenset({"Enum", "Variant", "Struct", "Tuple"})
BUILTIN_NAMES: Final = frozenset(LEAVES) | frozenset(BARE) | NEEDS_PARAMETERS
# Puppet types that mean nothing for JSON task parameters: named as such when met.
# fmt: off
UNSUPPORTED: Final = frozenset({
    "Binary", "Callable", "CatalogEntry", "Class", "Deferred", "Error", "Init", "Iterator",
    "Object", "Resource", "Runtime", "SemVer", "SemVerRange", "Target", "Timespan",
    "Timestamp", "Type", "TypeSet", "URI", "Unit",
})
# Puppet's reserved words, which are no bare-word strings.
KEYWORDS: Final = frozenset({
    "and", "application", "attr", "case", "class", "consumes", "default", "define", "else",
    "elsif", "false", "function", "if", "import", "in", "inherits", "node", "or", "private",
    "produces", "site", "true", "type", "undef", "unless",
})
# fmt: on


# -- signatures ------------------------------------------------------------------------

Value = PType | Regex | str | bool | int | float | None  # None is the keyword 'default'
Kinds = tuple[str, ...]
KIND_NAMES: Final = {
    "type": "a type",
    "number": "a number",
    "default": "'default'",
    "bool": "true or false",
    "string": "a string",
    "regex": "a regex",
}
_BOUNDS: Final = ("number", "default")


def _one(kinds: Kinds) -> Callable[[list[Value]], Kinds | None]:
    return lambda got: None if got else kinds


def _repeat(kinds: Kinds) -> Callable[[list[Value]], Kinds | None]:
    return lambda got: kinds


def _two_bounds(got: list[Value]) -> Kinds | None:
    return _BOUNDS if len(got) < 2 else None


def _array_next(got: list[Value]) -> Kinds | None:
    if not got:
        return ("type", *_BOUNDS)
    return _BOUNDS if len(got) < (3 if isinstance(got[0], PType) else 2) else None


def _hash_next(got: list[Value]) -> Kinds | None:
    if not got:
        return ("type", *_BOUNDS)
    if not isinstance(got[0], PType):
        return _BOUNDS if len(got) < 2 else None
    return ("type",) if len(got) == 1 else (_BOUNDS if len(got) < 4 else None)


def _tuple_next(got: list[Value]) -> Kinds | None:
    sizes = sum(not isinstance(v, PType) for v in got)
    if not got:
        return ("type",)
    if not sizes:
        return ("type", *_BOUNDS)
    return _BOUNDS if sizes < 2 else None


def _enum_next(got: list[Value]) -> Kinds | None:
    if got and isinstance(got[-1], bool):
        return None
    return ("string", "bool") if got else ("string",)


# What each parameterized type takes next, given the parameters read so far.
SIGNATURES: Final[dict[str, Callable[[list[Value]], Kinds | None]]] = {
    "Integer": _two_bounds,
    "Float": _two_bounds,
    "String": _two_bounds,
    "Collection": _two_bounds,
    "Boolean": _one(("bool",)),
    "Enum": _enum_next,
    "Pattern": _repeat(("regex", "string", "type")),
    "Regexp": _one(("regex", "string")),
    "Optional": _one(("type", "string")),
    "NotUndef": _one(("type", "string")),
    "Sensitive": _one(("type",)),
    "Iterable": _one(("type",)),
    "Variant": _repeat(("type",)),
    "Array": _array_next,
    "Hash": _hash_next,
    "Tuple": _tuple_next,
}


# -- builders --------------------------------------------------------------------------
# Each builder gets the parameters as read (kinds already checked by the signature) and
# their positions, for errors about their values.

_Builder = Callable[["Parser", list[Value], list[int]], PType]


def _bounds(
    p: Parser, values: list[Value], at: list[int], *, integral: bool, size: bool = False
) -> tuple[float | None, float | None]:
    """``[min, max]`` with ``default`` (None) for an open end; min may not exceed max."""
    bounds: list[float | None] = [None, None]
    for i, (value, pos) in enumerate(zip(values, at, strict=True)):
        if not isinstance(value, int | float):  # 'default'
            continue
        if isinstance(value, float) and integral:
            p.fail("an integer or 'default'", at=pos)
        if size and value < 0:
            p.fail("a size of 0 or more, or 'default'", at=pos)
        bounds[i] = value if integral else float(value)
    low, high = bounds
    if low is not None and high is not None and low > high:
        p.fail(
            f"a maximum of at least {low}",
            at=at[1],
            problem=f"the maximum {high} is below the minimum {low}",
        )
    return low, high


def _sizes(p: Parser, values: list[Value], at: list[int]) -> tuple[int, int | None]:
    low, high = _bounds(p, values, at, integral=True, size=True)
    return int(low or 0), None if high is None else int(high)


def _closing(p: Parser) -> int:
    return p.last_end - 1  # the ']' just read


def _integer(p: Parser, values: list[Value], at: list[int]) -> PType:
    low, high = _bounds(p, values, at, integral=True)
    return IntegerType(None if low is None else int(low), None if high is None else int(high))


def _array(p: Parser, values: list[Value], at: list[int]) -> PType:
    if isinstance(values[0], PType):
        return ArrayType(values[0], *_sizes(p, values[1:], at[1:]))
    if len(values) < 2:
        p.fail("',' and a maximum size (Array[min, max] takes both)", at=_closing(p))
    return ArrayType(ANY, *_sizes(p, values, at))


def _hash(p: Parser, values: list[Value], at: list[int]) -> PType:
    key, value = values[0], values[1:2]
    if isinstance(key, PType):
        if not value or not isinstance(value[0], PType):
            p.fail("',' and a value type (Hash takes a key type and a value type)", at=_closing(p))
        return HashType(key, value[0], *_sizes(p, values[2:], at[2:]))
    if len(values) < 2:
        p.fail("',' and a maximum size (Hash[min, max] takes both)", at=_closing(p))
    return HashType(ANY, ANY, *_sizes(p, values, at))


def _tuple(p: Parser, values: list[Value], at: list[int]) -> PType:
    types = tuple(v for v in values if isinstance(v, PType))
    if len(types) == len(values):
        return TupleType(types)
    low, high = _sizes(p, values[len(types) :], at[len(types) :])
    return TupleType(types, low, high)


def _enum(p: Parser, values: list[Value], at: list[int]) -> PType:
    flag = values[-1] if isinstance(values[-1], bool) else False
    return EnumType(tuple(v for v in values if isinstance(v, str)), case_insensitive=flag)


def _regexes(p: Parser, values: list[Value], at: list[int]) -> list[Regex]:
    out: list[Regex] = []
    for value, pos in zip(values, at, strict=True):
        if isinstance(value, str):
            value = p.regex(value, pos, "'")
        elif isinstance(value, RegexpType) and value.pattern is not None:
            value = value.pattern
        if not isinstance(value, Regex):
            p.fail("a regex, a string or Regexp[/regex/]", at=pos)
        out.append(value)
    return out


def _wrapped(node: Callable[[PType], PType]) -> _Builder:
    # Optional['present'] is Optional[Enum['present']].
    return lambda p, values, at: node(
        EnumType((values[0],)) if isinstance(values[0], str) else values[0]  # type: ignore[arg-type]
    )


BUILDERS: Final[dict[str, _Builder]] = {
    "Integer": _integer,
    "Float": lambda p, v, at: FloatType(*_bounds(p, v, at, integral=False)),
    "String": lambda p, v, at: StringType(*_sizes(p, v, at)),
    "Collection": lambda p, v, at: CollectionType(*_sizes(p, v, at)),
    "Boolean": lambda p, v, at: BooleanType(bool(v[0])),
    "Enum": _enum,
    "Pattern": lambda p, v, at: PatternType(tuple(_regexes(p, v, at))),
    "Regexp": lambda p, v, at: RegexpType(_regexes(p, v, at)[0]),
    "Optional": _wrapped(OptionalType),
    "NotUndef": _wrapped(NotUndefType),
    "Sensitive": lambda p, v, at: SensitiveType(v[0]),  # type: ignore[arg-type]
    "Iterable": lambda p, v, at: IterableType(v[0]),  # type: ignore[arg-type]
    "Variant": lambda p, v, at: VariantType(tuple(v)),  # type: ignore[arg-type]
    "Array": _array,
    "Hash": _hash,
    "Tuple": _tuple,
}
