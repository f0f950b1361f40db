"""Puppet's canonical text of a type tree: ``Integer[0, 5]``, ``Optional[String[1]]``.

What this prints the parser reads back as the same tree. Strings are quoted as Puppet
does (single quotes unless a quote, a backslash or a control character needs double
quotes and escapes), regexes are printed as written between slashes, and an alias by
its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from podium.types.tree import (
    ANY,
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
    UndefType,
    VariantType,
)


def format_type(t: PType) -> str:
    """The canonical Puppet text of ``t``."""
    return _FORMATTERS[type(t)](t)


def quote(text: str) -> str:
    """``text`` as a Puppet string literal."""
    if "'" not in text and "\\" not in text and not any(_is_control(c) for c in text):
        return f"'{text}'"
    return '"' + "".join(_DQ_ESCAPES.get(c) or _escape_control(c) for c in text) + '"'


def format_regex(regex: Regex) -> str:
    """``regex`` as a Puppet regex literal: its source between slashes."""
    # Regex sources keep no escaped slash (see Regex.from_ruby): escape every slash.
    return "/" + regex.source.replace("/", "\\/") + "/"


def format_number(n: float) -> str:
    """A bound as Puppet reads it back: ``1.0e+20`` is written ``1e20``."""
    return repr(n).replace("e+", "e")


_DQ_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _is_control(c: str) -> bool:
    return c < " " or "\x7f" <= c <= "\x9f"


def _escape_control(c: str) -> str:
    return f"\\u{{{ord(c):X}}}" if _is_control(c) else c


def _params(name: str, params: list[str]) -> str:
    return f"{name}[{', '.join(params)}]" if params else name


def _bounds(low: float | None, high: float | None) -> list[str]:
    """Puppet's ``[min, max]`` part: empty when unbounded, ``default`` for an open min."""
    if low is None and high is None:
        return []
    first = "default" if low is None else format_number(low)
    return [first] if high is None else [first, format_number(high)]


def _sizes(low: int, high: int | None) -> list[str]:
    """A size or length range: ``[min]`` or ``[min, max]``, empty for ``[0, default]``."""
    if high is None:
        return [str(low)] if low else []
    return [str(low), str(high)]


def _inner(name: str, inner: PType) -> str:
    return name if inner == ANY else f"{name}[{format_type(inner)}]"


def _single_value(name: str, inner: PType) -> str:
    # Optional['present'] is Puppet's own spelling of Optional[Enum['present']].
    if isinstance(inner, EnumType) and len(inner.values) == 1 and not inner.case_insensitive:
        return f"{name}[{quote(inner.values[0])}]"
    return _inner(name, inner)


def _enum(t: EnumType) -> str:
    return _params("Enum", [quote(v) for v in t.values] + (["true"] if t.case_insensitive else []))


def _array(t: ArrayType) -> str:
    if t.element == ANY and not t.min and t.max is None:
        return "Array"
    return _params("Array", [format_type(t.element), *_sizes(t.min, t.max)])


def _hash(t: HashType) -> str:
    if t.key == ANY and t.value == ANY and not t.min and t.max is None:
        return "Hash"
    return _params("Hash", [format_type(t.key), format_type(t.value), *_sizes(t.min, t.max)])


def _member(m: StructMember) -> str:
    key = quote(m.name)
    if m.presence == "optional":
        key = f"Optional[{key}]"
    elif m.presence == "required":
        key = f"NotUndef[{key}]"
    return f"{key} => {format_type(m.type)}"


def _tuple(t: TupleType) -> str:
    sizes = [] if t.min is None else [str(t.min)] + ([] if t.max is None else [str(t.max)])
    return _params("Tuple", [*(format_type(m) for m in t.types), *sizes])


_FORMATTERS: Final[dict[type[PType], Callable[[Any], str]]] = {
    AnyType: lambda t: "Any",
    DataType: lambda t: "RichData" if t.rich else "Data",
    ScalarType: lambda t: "Scalar",
    ScalarDataType: lambda t: "ScalarData",
    NumericType: lambda t: "Numeric",
    UndefType: lambda t: "Undef",
    DefaultType: lambda t: "Default",
    TargetSpecType: lambda t: "TargetSpec",
    BooleanType: lambda t: _params("Boolean", [] if t.value is None else [str(t.value).lower()]),
    StringType: lambda t: _params("String", _sizes(t.min, t.max)),
    CollectionType: lambda t: _params("Collection", _sizes(t.min, t.max)),
    IntegerType: lambda t: _params("Integer", _bounds(t.min, t.max)),
    FloatType: lambda t: _params("Float", _bounds(t.min, t.max)),
    EnumType: _enum,
    PatternType: lambda t: _params("Pattern", [format_regex(r) for r in t.patterns]),
    RegexpType: lambda t: _params("Regexp", [] if t.pattern is None else [format_regex(t.pattern)]),
    OptionalType: lambda t: _single_value("Optional", t.type),
    NotUndefType: lambda t: _single_value("NotUndef", t.type),
    SensitiveType: lambda t: _inner("Sensitive", t.type),
    IterableType: lambda t: _inner("Iterable", t.element),
    VariantType: lambda t: _params("Variant", [format_type(m) for m in t.types]),
    ArrayType: _array,
    HashType: _hash,
    StructType: lambda t: "Struct[{" + ", ".join(_member(m) for m in t.members) + "}]",
    TupleType: _tuple,
    AliasType: lambda t: t.name,
}
