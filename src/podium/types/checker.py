"""Checking JSON values against type trees, and saying where and why one does not fit.

:func:`check` returns ``None`` for an instance, else the :class:`Mismatch` of the
innermost type that failed, with the path to it in the value. Values are JSON as Python
decodes it: NaN and infinities are refused by every type (they are not JSON), a Python
``bool`` is no Integer, and an int is no Float (as in Puppet).

Checking goes no deeper than :data:`MAX_DEPTH` steps (a step per type or container
entered), so a deeply nested value is a mismatch rather than a ``RecursionError``.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from podium.types.printer import format_type, quote
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
    RegexpType,
    ScalarDataType,
    ScalarType,
    SensitiveType,
    StringType,
    StructType,
    TargetSpecType,
    TupleType,
    UndefType,
    VariantType,
    fold_ascii,
)

MAX_DEPTH: Final = 200
"""Most types and containers entered while checking one value."""

Problem = Literal["type", "key", "missing_key", "unexpected_key", "too_deep"]


@dataclass(frozen=True)
class Mismatch:
    """Why a value is not an instance: where (``path``), what was expected, what was got.

    ``problem`` tells a wrong value ("type") from a wrong hash key ("key"), a key a Struct
    lacks ("missing_key", ``key`` names it) or does not allow ("unexpected_key", with the
    ``known_keys``), and a value too deep to check ("too_deep"). ``sensitive`` is set when
    the value failed inside a Sensitive type: :meth:`describe` then never shows it.
    """

    path: tuple[str | int, ...]
    expected: str
    got: object
    problem: Problem = "type"
    key: object = None
    known_keys: tuple[str, ...] = ()
    sensitive: bool = False

    def describe(self, name: str = "", *, redact: bool = False) -> str:
        """One sentence: ``opts.retries: expected Integer[0, 5], got "two"``."""
        where = _where(name, self.path)
        prefix = f"{where}: " if where else ""
        hide = redact or self.sensitive
        if self.problem == "missing_key":
            return f"{prefix}missing key {_key(self.key)} (expected {self.expected})"
        if self.problem == "unexpected_key":
            allowed = ", ".join(quote(k) for k in self.known_keys)
            allowed = f"one of {allowed}" if allowed else "no keys"
            key = "(name redacted)" if hide else _key(self.key)
            return f"{prefix}unexpected key {key} (expected {allowed})"
        if self.problem == "key":
            return f"{prefix}expected keys of type {self.expected}, got {_show(self.got, hide)}"
        if self.problem == "too_deep":
            return f"{prefix}expected {self.expected}, got a value nested too deeply to check"
        return f"{prefix}expected {self.expected}, got {_show(self.got, hide)}"


def check(t: PType, value: object) -> Mismatch | None:
    """``None`` when ``value`` is an instance of ``t``, else the first reason it is not."""
    return _check(t, value, 0)


# -- describing ------------------------------------------------------------------------

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False)
_PREVIEW: Final = 60
_KINDS: Final[dict[type, str]] = {
    bool: "Boolean",
    int: "Integer",
    float: "Float",
    str: "String",
    list: "Array",
    dict: "Hash",
}


def _where(name: str, path: tuple[str | int, ...]) -> str:
    parts = [name] if name else []
    for step in path:
        if isinstance(step, str) and _IDENTIFIER.fullmatch(step):
            parts.append(f".{step}" if parts else step)
        else:
            parts.append(f"[{step if isinstance(step, int) else _preview(step)}]")
    if len(parts) > 12:  # a path into a deep value: its ends tell where
        parts = [*parts[:6], "…", *parts[-5:]]
    return "".join(parts)


def _key(key: object) -> str:
    return quote(key) if isinstance(key, str) else _preview(key)


def _show(value: object, hide: bool) -> str:
    if value is None:
        return "undef"
    if not hide:
        return _preview(value)
    kind = _KINDS.get(type(value)) or type(value).__name__
    return f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind} (value redacted)"


def _preview(value: object) -> str:
    """``value`` as JSON, cut to a few words; only as much is encoded as is shown."""
    chunks: list[str] = []
    try:
        for chunk in _ENCODER.iterencode(value):
            chunks.append(chunk)
            if sum(map(len, chunks)) > _PREVIEW:
                break
        text = "".join(chunks)
    except (TypeError, ValueError, RecursionError):  # not JSON: a bounded repr instead
        text = reprlib.repr(value)
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


# -- checking --------------------------------------------------------------------------
# One function a type class; each returns None or the Mismatch with a path relative to
# the value it was given, which callers prefix with the key or index they descended by.

_Check = Callable[[Any, object, int], "Mismatch | None"]


def _check(t: PType, v: object, depth: int) -> Mismatch | None:
    if depth > MAX_DEPTH:
        return Mismatch((), format_type(t), v, problem="too_deep")
    return _CHECKS[type(t)](t, v, depth)


def _fail(t: PType, v: object) -> Mismatch:
    return Mismatch((), format_type(t), v)


def _within(step: str | int, m: Mismatch | None) -> Mismatch | None:
    return None if m is None else replace(m, path=(step, *m.path))


def _reach(m: Mismatch) -> int:
    """How far into the value a mismatch is: a wrong key is a step past its hash."""
    return len(m.path) + (m.problem != "type")


def _wrapper(t: PType, m: Mismatch | None) -> Mismatch | None:
    """A wrapped type's mismatch, or the wrapper's own when it is at the very value."""
    return m if m is None or _reach(m) else replace(m, expected=format_type(t))


def _finite(v: object) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _in_range(v: float, low: float | None, high: float | None) -> bool:
    return (low is None or v >= low) and (high is None or v <= high)


def _walk(t: PType, v: object, depth: int, *, data: bool) -> Mismatch | None:
    """Any (or Data, with ``data``) over a whole value, without recursion."""
    stack: list[tuple[object, tuple[str | int, ...], int]] = [(v, (), depth)]
    while stack:
        value, path, level = stack.pop()
        if isinstance(value, list | dict):
            if level > MAX_DEPTH:
                return Mismatch(path, format_type(t), value, problem="too_deep")
            for key in value if data and isinstance(value, dict) else ():
                if not isinstance(key, str):
                    return Mismatch(path, "String", key, problem="key")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((item, (*path, key), level + 1) for key, item in items)
        elif not _finite(value) or (
            data and value is not None and not isinstance(value, str | int | float)
        ):
            return Mismatch(path, format_type(t), value)
    return None


def _scalar(t: PType, v: object, depth: int) -> Mismatch | None:
    return None if isinstance(v, str | int | float) and _finite(v) else _fail(t, v)


def _numeric(t: PType, v: object, depth: int) -> Mismatch | None:
    return None if (_is_int(v) or isinstance(v, float)) and _finite(v) else _fail(t, v)


def _integer(t: IntegerType, v: object, depth: int) -> Mismatch | None:
    ok = _is_int(v) and _in_range(v, t.min, t.max)  # type: ignore[arg-type]
    return None if ok else _fail(t, v)


def _float(t: FloatType, v: object, depth: int) -> Mismatch | None:
    ok = isinstance(v, float) and math.isfinite(v) and _in_range(v, t.min, t.max)
    return None if ok else _fail(t, v)


def _sized(v: list[object] | dict[object, object] | str, low: int, high: int | None) -> bool:
    return low <= len(v) and (high is None or len(v) <= high)


def _string(t: StringType, v: object, depth: int) -> Mismatch | None:
    return None if isinstance(v, str) and _sized(v, t.min, t.max) else _fail(t, v)


def _enum(t: EnumType, v: object, depth: int) -> Mismatch | None:
    if isinstance(v, str) and (fold_ascii(v) if t.case_insensitive else v) in t.folded:
        return None
    return _fail(t, v)


def _pattern(t: PatternType, v: object, depth: int) -> Mismatch | None:
    if isinstance(v, str) and (not t.patterns or any(r.compiled.search(v) for r in t.patterns)):
        return None
    return _fail(t, v)


def _variant(t: VariantType, v: object, depth: int) -> Mismatch | None:
    misses: list[Mismatch] = []
    for member in t.types:
        m = _check(member, v, depth + 1)
        if m is None:
            return None
        misses.append(m)
    best = max(misses, key=_reach)  # the first of the farthest reaching
    if _reach(best):
        return best
    return replace(_fail(t, v), sensitive=any(m.sensitive for m in misses))


def _array(t: ArrayType, v: object, depth: int) -> Mismatch | None:
    if not isinstance(v, list) or not _sized(v, t.min, t.max):
        return _fail(t, v)
    for i, item in enumerate(v):
        if m := _check(t.element, item, depth + 1):
            return _within(i, m)
    return None


def _hash(t: HashType, v: object, depth: int) -> Mismatch | None:
    if not isinstance(v, dict) or not _sized(v, t.min, t.max):
        return _fail(t, v)
    for key, item in v.items():
        if t.key != ANY and _check(t.key, key, depth + 1):
            return Mismatch((), format_type(t.key), key, problem="key")
        if m := _check(t.value, item, depth + 1):
            return _within(key, m)
    return None


def _struct(t: StructType, v: object, depth: int) -> Mismatch | None:
    if not isinstance(v, dict):
        return _fail(t, v)
    present = 0
    for member in t.members:
        if member.name in v:
            present += 1
            if m := _check(member.type, v[member.name], depth + 1):
                return _within(member.name, m)
        elif member.required:
            return Mismatch((), format_type(member.type), v, "missing_key", member.name)
    if present < len(v):
        key = next(k for k in v if k not in t.names)
        known = tuple(m.name for m in t.members)
        return Mismatch((), format_type(t), v[key], "unexpected_key", key, known)
    return None


def _tuple(t: TupleType, v: object, depth: int) -> Mismatch | None:
    if not isinstance(v, list):
        return _fail(t, v)
    if not (len(v) == len(t.types) if t.min is None else _sized(v, t.min, t.max)):
        return _fail(t, v)
    for i, item in enumerate(v):
        if m := _check(t.types[min(i, len(t.types) - 1)], item, depth + 1):
            return _within(i, m)
    return None


def _collection(t: CollectionType, v: object, depth: int) -> Mismatch | None:
    if not isinstance(v, list | dict) or not _sized(v, t.min, t.max):
        return _fail(t, v)
    return _walk(t, v, depth, data=False)


def _iterable(t: IterableType, v: object, depth: int) -> Mismatch | None:
    if isinstance(v, str):
        items: list[tuple[str | int, object]] = [] if t.element == ANY else list(enumerate(v))
    elif isinstance(v, list):
        items = list(enumerate(v))
    elif isinstance(v, dict):
        items = [(key, [key, item]) for key, item in v.items()]
    elif _is_int(v) and v >= 0:  # type: ignore[operator]
        # An integer n iterates 0..n-1; the element types met here are ranges, which
        # hold all of those when they hold both ends.
        items = [(0, 0), (0, v - 1)] if v else []  # type: ignore[operator]
    else:
        return _fail(t, v)
    for step, item in items:
        if m := _check(t.element, item, depth + 1):
            return _within(step, m) if not _is_int(v) else _fail(t, v)
    return None


def _target_spec(t: TargetSpecType, v: object, depth: int) -> Mismatch | None:
    if isinstance(v, str) and v:
        return None
    if not isinstance(v, list):
        return _fail(t, v)
    for i, item in enumerate(v):
        if m := _check(t, item, depth + 1):
            return _within(i, m)
    return None


def _sensitive(t: SensitiveType, v: object, depth: int) -> Mismatch | None:
    m = _wrapper(t, _check(t.type, v, depth + 1))
    return None if m is None else replace(m, sensitive=True)


_CHECKS: Final[dict[type[PType], _Check]] = {
    AnyType: lambda t, v, depth: _walk(t, v, depth, data=False),
    DataType: lambda t, v, depth: _walk(t, v, depth, data=True),
    ScalarType: _scalar,
    ScalarDataType: _scalar,
    NumericType: _numeric,
    UndefType: lambda t, v, depth: None if v is None else _fail(t, v),
    DefaultType: lambda t, v, depth: _fail(t, v),
    RegexpType: lambda t, v, depth: _fail(t, v),
    BooleanType: lambda t, v, depth: (
        None if isinstance(v, bool) and t.value in (None, v) else _fail(t, v)
    ),
    IntegerType: _integer,
    FloatType: _float,
    StringType: _string,
    EnumType: _enum,
    PatternType: _pattern,
    OptionalType: lambda t, v, depth: (
        None if v is None else _wrapper(t, _check(t.type, v, depth + 1))
    ),
    NotUndefType: lambda t, v, depth: (
        _fail(t, v) if v is None else _wrapper(t, _check(t.type, v, depth + 1))
    ),
    SensitiveType: _sensitive,
    AliasType: lambda t, v, depth: _wrapper(t, _check(t.resolved, v, depth + 1)),
    VariantType: _variant,
    ArrayType: _array,
    HashType: _hash,
    StructType: _struct,
    TupleType: _tuple,
    CollectionType: _collection,
    IterableType: _iterable,
    TargetSpecType: _target_spec,
}
