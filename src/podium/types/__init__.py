"""Puppet data types for task parameters: parse, check, print.

    t = parse_type("Struct[{'hosts' => TargetSpec, Optional['retries'] => Integer[0, 5]}]")
    if (m := check(t, params)) is not None:
        raise ValidationError(m.describe("params"))

Types are trees of frozen dataclasses (:mod:`podium.types.tree`); :func:`parse_type`
reads Puppet's syntax (:mod:`~podium.types.parser`), :func:`format_type` prints it back
(:mod:`~podium.types.printer`), :func:`check` tells whether a JSON value is an instance
and if not where and why (:mod:`~podium.types.checker`), and :class:`TypeAliases` holds
a module's ``types/*.pp`` aliases (:mod:`~podium.types.aliases`). All of it is pure.

    ValidationError (podium.errors)
    ├── TypeSyntaxError   not a type expression: text, position, expected
    ├── UnknownType       a name that is no type or alias here: name, suggestion
    └── TypeAliasError    an alias whose definition is wrong: alias
"""

from __future__ import annotations

from podium.types.aliases import TypeAliasError, TypeAliases, parse_alias_file
from podium.types.checker import Mismatch, check
from podium.types.parser import TypeSyntaxError, UnknownType, parse_type
from podium.types.printer import format_type
from podium.types.tree import (
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
    accepts_undef,
    is_sensitive,
)

__all__ = [
    "AliasType",
    "AnyType",
    "ArrayType",
    "BooleanType",
    "CollectionType",
    "DataType",
    "DefaultType",
    "EnumType",
    "FloatType",
    "HashType",
    "IntegerType",
    "IterableType",
    "Mismatch",
    "NotUndefType",
    "NumericType",
    "OptionalType",
    "PType",
    "PatternType",
    "Regex",
    "RegexpType",
    "ScalarDataType",
    "ScalarType",
    "SensitiveType",
    "StringType",
    "StructMember",
    "StructType",
    "TargetSpecType",
    "TupleType",
    "TypeAliasError",
    "TypeAliases",
    "TypeSyntaxError",
    "UndefType",
    "UnknownType",
    "VariantType",
    "accepts_undef",
    "check",
    "format_type",
    "is_sensitive",
    "parse_alias_file",
    "parse_type",
]
