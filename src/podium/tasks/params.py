"""Checks of task parameters against their declared types, before anything is sent.

A small subset of the Puppet type system, until the full one lands: ``String[min,max]``,
``Integer[min,max]``, ``Float[min,max]``, ``Numeric``, ``Boolean``, ``Optional[T]``,
``Array[T,min,max]``, ``Hash[K,V,min,max]``, ``Enum[a,b]``, ``Variant[A,B]``, ``Undef``,
``ScalarData``, ``Any`` and ``Data``. Any other type (``Pattern``, ``Struct``,
``Stdlib::Absolutepath``, ...) accepts every value but is not optional: a parameter of
such a type must be given, as Puppet would ask.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from podium.errors import ValidationError
from podium.tasks.metadata import Task, TaskParameter

# Deeper type expressions are not checked (accepted as Any).
_MAX_DEPTH: Final = 32
_INF: Final = math.inf


def validate_params(task: Task, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters to send: checked against the task's metadata, defaults filled in."""
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ValidationError(
            f"invalid parameters for task {task.name}: params must be a JSON object",
            details={"task": task.name},
        )
    problems: list[dict[str, Any]] = []
    result = dict(params)
    if task.declares_parameters:
        takes = ", ".join(sorted(task.parameters)) or "no parameters"
        for name in sorted(params.keys() - task.parameters.keys()):
            problems.append(
                {
                    "parameter": name,
                    "problem": f"unknown parameter {name!r} (the task takes: {takes})",
                }
            )
    for name, param in task.parameters.items():
        if name not in params:
            if param.has_default:
                result[name] = copy.deepcopy(param.default)
            elif not is_optional(param.type):
                problems.append(
                    {
                        "parameter": name,
                        "expected": param.type,
                        "problem": f"parameter {name!r} ({param.type}) is required "
                        "but was not given",
                    }
                )
            continue
        if not accepts(param.type, params[name]):
            problems.append(
                {
                    "parameter": name,
                    "expected": param.type,
                    "got": _describe(params[name], param),
                    "problem": f"parameter {name!r} expects a value of type {param.type}, "
                    f"got {_describe(params[name], param)}",
                }
            )
    if problems:
        raise ValidationError(
            f"invalid parameters for task {task.name}: "
            + "; ".join(p["problem"] for p in problems),
            kind="puppetlabs.orchestrator/validation-error",
            details={"task": task.name, "errors": problems},
        )
    return result


def accepts(type_text: str, value: object) -> bool:
    """Whether ``value`` is an instance of the Puppet type ``type_text``."""
    return _parse(type_text).check(value)


def is_optional(type_text: str) -> bool:
    """Whether a parameter of this type may be left out (its type accepts undef)."""
    return _parse(type_text).nullable


# -- types ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Type:
    check: Callable[[object], bool]
    nullable: bool


_ANY = _Type(lambda v: True, nullable=True)
# Unknown to this module: not checked, but not optional either.
_UNKNOWN = _Type(lambda v: True, nullable=False)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and not (isinstance(v, float) and math.isnan(v))


def _is_float(v: object) -> bool:
    return isinstance(v, float) and not math.isnan(v)


_NUMBER_KINDS: Final[dict[str, Callable[[object], bool]]] = {
    "Integer": _is_int,
    "Float": _is_float,
    "Numeric": _is_number,
}


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> _Type:
    try:
        parser = _Parser(text)
        node = parser.value(0)
        parser.expect_end()
        return _build(node, 0)
    except _Unparsable:
        return _UNKNOWN


class _Unparsable(Exception):
    pass


# A parsed expression: ("type", name, args) | ("int"|"float"|"str"|"word", value) | ("opaque",)
_Node = tuple[Any, ...]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<name>[A-Z][A-Za-z0-9_]*(?:::[A-Z][A-Za-z0-9_]*)*)
     |(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
     |(?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
     |(?P<regex>/(?:[^/\\]|\\.)*/)
     |(?P<word>[a-z_][A-Za-z0-9_]*(?:::[a-z_][A-Za-z0-9_]*)*)
     |(?P<punct>=>|[\[\]{},])
    )""",
    re.VERBOSE,
)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise _Unparsable
            kind = m.lastgroup
            assert kind is not None
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end":
            raise _Unparsable
        self.i += 1
        return tok

    def expect_end(self) -> None:
        if self.peek()[0] != "end":
            raise _Unparsable

    def value(self, depth: int) -> _Node:
        if depth > _MAX_DEPTH:
            raise _Unparsable
        kind, text = self.take()
        if kind == "name":
            args: list[_Node] = []
            if self.peek() == ("punct", "["):
                self.take()
                while self.peek() != ("punct", "]"):
                    args.append(self.value(depth + 1))
                    if self.peek() == ("punct", ","):
                        self.take()
                    elif self.peek() != ("punct", "]"):
                        raise _Unparsable
                self.take()
            return ("type", text, tuple(args))
        if kind == "number":
            return ("float", float(text)) if re.search(r"[.eE]", text) else ("int", int(text))
        if kind == "string":
            return ("str", re.sub(r"\\(.)", r"\1", text[1:-1]))
        if kind == "word":
            return ("word", text)
        if kind == "regex":
            return ("opaque",)
        if (kind, text) in (("punct", "{"), ("punct", "[")):
            self.skip_balanced(text)
            return ("opaque",)
        raise _Unparsable

    def skip_balanced(self, opener: str) -> None:
        closer = {"{": "}", "[": "]"}
        stack = [closer[opener]]
        while stack:
            _, text = self.take()
            if text in closer:
                stack.append(closer[text])
            elif text == stack[-1]:
                stack.pop()


def _build(node: _Node, depth: int) -> _Type:
    if depth > _MAX_DEPTH or node[0] != "type":
        raise _Unparsable
    name: str = node[1]
    args: tuple[_Node, ...] = node[2]
    if name in ("Any", "Data", "RichData"):
        return _ANY
    if name == "Undef":
        return _Type(lambda v: v is None, nullable=True)
    if name == "Boolean":
        return _Type(lambda v: isinstance(v, bool), nullable=False)
    if name == "ScalarData":
        return _Type(lambda v: _is_number(v) or isinstance(v, str | bool), nullable=False)
    if name in ("Integer", "Float", "Numeric"):
        lo, hi = _range(args, number=True)
        is_kind = _NUMBER_KINDS[name]
        return _Type(
            lambda v: is_kind(v) and isinstance(v, int | float) and lo <= v <= hi, nullable=False
        )
    if name == "String":
        lo, hi = _range(args)
        return _Type(lambda v: isinstance(v, str) and lo <= len(v) <= hi, nullable=False)
    if name == "Enum":
        values = frozenset(a[1] for a in args if a[0] in ("str", "word"))
        if len(values) != len(args):
            raise _Unparsable
        return _Type(lambda v: isinstance(v, str) and v in values, nullable=False)
    if name == "Optional":
        inner = _ANY if not args else _element(args[0], depth)
        return _Type(lambda v: v is None or inner.check(v), nullable=True)
    if name == "Variant":
        members = [_element(a, depth) for a in args]
        return _Type(
            lambda v: any(m.check(v) for m in members), nullable=any(m.nullable for m in members)
        )
    if name == "Array":
        elem = _ANY
        if args and args[0][0] == "type":
            elem, args = _build(args[0], depth + 1), args[1:]
        lo, hi = _range(args)
        return _Type(
            lambda v: isinstance(v, list) and lo <= len(v) <= hi and all(elem.check(e) for e in v),
            nullable=False,
        )
    if name == "Hash":
        key, val = _ANY, _ANY
        if len(args) >= 2 and args[0][0] == "type" and args[1][0] == "type":
            key, val, args = _build(args[0], depth + 1), _build(args[1], depth + 1), args[2:]
        lo, hi = _range(args)
        return _Type(
            lambda v: (
                isinstance(v, dict)
                and lo <= len(v) <= hi
                and all(key.check(k) and val.check(x) for k, x in v.items())
            ),
            nullable=False,
        )
    return _UNKNOWN


def _element(node: _Node, depth: int) -> _Type:
    """A type argument; a bare string stands for ``Enum[string]`` as in Puppet."""
    if node[0] in ("str", "word"):
        return _Type(lambda v: v == node[1], nullable=False)
    return _build(node, depth + 1)


def _range(args: tuple[_Node, ...], *, number: bool = False) -> tuple[float, float]:
    """``[min]`` or ``[min, max]``; ``default`` leaves a bound open."""
    if len(args) > 2:
        raise _Unparsable
    bounds = [-_INF if number else 0, _INF]
    for i, arg in enumerate(args):
        if arg == ("word", "default"):
            continue
        if arg[0] == "int" or (number and arg[0] == "float"):
            bounds[i] = arg[1]
        else:
            raise _Unparsable
    return bounds[0], bounds[1]


def _describe(value: object, param: TaskParameter) -> str:
    """The value as an error may show it: its Puppet type, and itself unless sensitive."""
    if value is None:
        return "Undef"
    kind = (
        "Boolean"
        if isinstance(value, bool)
        else "Integer"
        if isinstance(value, int)
        else "Float"
        if isinstance(value, float)
        else "String"
        if isinstance(value, str)
        else "Array"
        if isinstance(value, list)
        else "Hash"
        if isinstance(value, dict)
        else type(value).__name__
    )
    if param.sensitive:
        return f"{kind} [value redacted: the parameter is sensitive]"
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)
    return f"{kind} {shown[:80]}{'…' if len(shown) > 80 else ''}"
