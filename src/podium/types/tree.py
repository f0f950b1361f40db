"""The Puppet type tree: one frozen, hashable dataclass per kind of type.

Trees compare by value, so ``parse_type(format_type(t)) == t``. Derived data a checker
needs often (a Struct's required keys, an alias's resolved tree, an Enum's folded values)
is kept in ``cached_property`` slots, which take no part in equality or hashing.

Unbounded limits are ``None``; sizes and lengths start at 0. Bare ``Optional``,
``NotUndef``, ``Sensitive``, ``Iterable``, ``Array`` and ``Hash`` hold :class:`AnyType`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Final, Literal

from podium.types.lexer import ESCAPED_SLASH, REGEX_FLAGS, ruby_to_python

if TYPE_CHECKING:
    from podium.types.aliases import TypeAliases


class PType:
    """Base of the type nodes."""

    __slots__ = ()


@dataclass(frozen=True)
class AnyType(PType):
    """Any value, undef included."""


ANY: Final = AnyType()


@dataclass(frozen=True)
class DataType(PType):
    """Data (or RichData, which is Data for JSON values): JSON values, recursively."""

    rich: bool = False


@dataclass(frozen=True)
class ScalarType(PType):
    """Scalar: a string, a number or a boolean."""


@dataclass(frozen=True)
class ScalarDataType(PType):
    """ScalarData: a string, an integer, a float or a boolean."""


@dataclass(frozen=True)
class NumericType(PType):
    """Numeric: an integer or a float."""


@dataclass(frozen=True)
class UndefType(PType):
    """Undef: only undef (JSON null)."""


@dataclass(frozen=True)
class DefaultType(PType):
    """Default: only Puppet's ``default``, which no JSON value is."""


@dataclass(frozen=True)
class TargetSpecType(PType):
    """Bolt's TargetSpec: a non-empty string (names, globs, lists) or arrays of them."""


@dataclass(frozen=True)
class BooleanType(PType):
    """Boolean, or ``Boolean[true]``/``Boolean[false]`` for one of the two."""

    value: bool | None = None


@dataclass(frozen=True)
class StringType(PType):
    """String[min, max]: lengths in characters."""

    min: int = 0
    max: int | None = None


@dataclass(frozen=True)
class IntegerType(PType):
    """Integer[min, max]."""

    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class FloatType(PType):
    """Float[min, max]: floats only, as in Puppet (3 is not a Float)."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class EnumType(PType):
    """Enum['a', 'b'], with a trailing ``true`` for a case-insensitive match."""

    values: tuple[str, ...]
    case_insensitive: bool = False

    @cached_property
    def folded(self) -> frozenset[str]:
        """The values as compared: folded like Ruby's ``casecmp`` (ASCII only) if asked."""
        if self.case_insensitive:
            return frozenset(fold_ascii(v) for v in self.values)
        return frozenset(self.values)


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_ascii(text: str) -> str:
    """``text`` with ASCII letters lowered; Ruby's ``casecmp`` folds no other letter."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class Regex:
    """A Ruby regular expression: its source as written, and a Python translation."""

    source: str
    compiled: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def from_ruby(cls, source: str) -> Regex:
        """Translate and compile ``source``; raises ``ValueError`` saying what is wrong."""
        # An escaped slash means a slash: keep the plain form so that printing between
        # slashes (which escapes every slash) gives back the same source.
        source = ESCAPED_SLASH.sub(r"\1/", source)
        python = ruby_to_python(source)
        try:
            with warnings.catch_warnings():
                # Python warns about set syntax it may adopt ("[a--b]"); Ruby reads those
                # characters literally, and so does Python today.
                warnings.simplefilter("ignore", FutureWarning)
                compiled = re.compile(python, REGEX_FLAGS)
        except re.error as exc:
            raise ValueError(exc.msg) from exc
        except (OverflowError, RecursionError) as exc:
            raise ValueError(str(exc) or "too complex") from exc
        return cls(source, compiled)


@dataclass(frozen=True)
class PatternType(PType):
    """Pattern[/re/, 're']: strings some regex finds a match in (unanchored)."""

    patterns: tuple[Regex, ...] = ()


@dataclass(frozen=True)
class RegexpType(PType):
    """Regexp: a regular expression value, which no JSON value is."""

    pattern: Regex | None = None


@dataclass(frozen=True)
class OptionalType(PType):
    """Optional[T]: undef or a T."""

    type: PType = ANY


@dataclass(frozen=True)
class NotUndefType(PType):
    """NotUndef[T]: a T that is not undef."""

    type: PType = ANY


@dataclass(frozen=True)
class SensitiveType(PType):
    """Sensitive[T]: a T to be kept secret (the value arrives in clear; marking is elsewhere)."""

    type: PType = ANY


@dataclass(frozen=True)
class VariantType(PType):
    """Variant[A, B, ...]: a value of any member type."""

    types: tuple[PType, ...]


@dataclass(frozen=True)
class ArrayType(PType):
    """Array[T, min, max]."""

    element: PType = ANY
    min: int = 0
    max: int | None = None


@dataclass(frozen=True)
class HashType(PType):
    """Hash[K, V, min, max]."""

    key: PType = ANY
    value: PType = ANY
    min: int = 0
    max: int | None = None


Presence = Literal["auto", "optional", "required"]


@dataclass(frozen=True)
class StructMember:
    """One ``key => T`` of a Struct.

    ``presence`` is how the key was written: ``'k'`` ("auto": required unless T accepts
    undef), ``Optional['k']`` (may be left out) or ``NotUndef['k']`` (must be given).
    """

    name: str
    type: PType
    presence: Presence = "auto"

    @cached_property
    def required(self) -> bool:
        """Whether a hash must have this key."""
        if self.presence == "auto":
            return not accepts_undef(self.type)
        return self.presence == "required"


@dataclass(frozen=True)
class StructType(PType):
    """Struct[{'k' => T, ...}]: a hash with these keys and no others."""

    members: tuple[StructMember, ...]

    @cached_property
    def names(self) -> frozenset[str]:
        """The member keys."""
        return frozenset(m.name for m in self.members)


@dataclass(frozen=True)
class TupleType(PType):
    """Tuple[A, B, min, max]: an array whose elements are typed by position.

    Without a size the array has exactly one element per type; with one, elements past
    the last type are of the last type.
    """

    types: tuple[PType, ...]
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class CollectionType(PType):
    """Collection[min, max]: an array or a hash of that size."""

    min: int = 0
    max: int | None = None


@dataclass(frozen=True)
class IterableType(PType):
    """Iterable[T]: a string, array, hash or non-negative integer whose elements are Ts."""

    element: PType = ANY


@dataclass(frozen=True)
class AliasType(PType):
    """A type alias (``Mymod::Port``), resolved on first use from its alias set."""

    name: str
    aliases: TypeAliases = field(repr=False)

    @cached_property
    def resolved(self) -> PType:
        """The tree the alias stands for (itself holding aliases, resolved lazily)."""
        return self.aliases.resolve(self.name)


def accepts_undef(t: PType) -> bool:
    """Whether a parameter of this type may be left out or be null."""
    match t:
        case AnyType() | DataType() | UndefType() | OptionalType():
            return True
        case VariantType(types=types):
            return any(accepts_undef(m) for m in types)
        case SensitiveType(type=inner):
            return accepts_undef(inner)
        case AliasType():
            # Terminates: an alias set refuses aliases that reach themselves without
            # going through a container.
            return accepts_undef(t.resolved)
    return False


def is_sensitive(t: PType) -> bool:
    """Whether values of this type are secret: Sensitive at the top, seen through wrappers."""
    match t:
        case SensitiveType():
            return True
        case OptionalType(type=inner) | NotUndefType(type=inner):
            return is_sensitive(inner)
        case VariantType(types=types):
            # One sensitive member is enough: the value might be that one.
            return any(is_sensitive(m) for m in types)
        case AliasType():
            return is_sensitive(t.resolved)
    return False
