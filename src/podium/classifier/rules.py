"""Node group rules: validating, matching, pinning, and translating them to PuppetDB queries.

A rule is JSON, as PE's node classifier keeps it::

    condition : ["and", condition, ...] | ["or", condition, ...] | ["not", condition]
              | [operator, field, value]
    operator  : "=" | "!=" | "~" | "!~" | "<" | "<=" | ">" | ">="
    field     : "name" | ["fact", key, part...] | ["trusted", key, part...]
    part      : key (a string) | index (a number, or a string of digits, into an array)

``name`` is the node's certname. ``=`` compares text (a number or boolean fact by its
JSON text, so ``"4"`` matches the fact ``4`` and ``"true"`` the fact ``true``); ``~`` is
a regular-expression search; ``<`` ``<=`` ``>`` ``>=`` compare numbers, and a fact that
is not a number (or a string of one) never matches them. A missing fact matches no
comparison. ``!=`` and ``!~`` are Podium's shorthand for ``["not", ["=", ...]]`` and
``["not", ["~", ...]]`` (PE writes the latter), so a missing fact matches them.

Pinned nodes are part of the rule, as PE keeps them: ``["or", <rule>, ["=", "name", N]]``.

Everything here is pure: rules in, booleans and queries out.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from podium.errors import ValidationError

Rule = list[Any]
# (certname, facts, trusted) -> matches
Matcher = Callable[[str, Mapping[str, Any], Mapping[str, Any]], bool]

BOOLEAN_OPERATORS: Final = ("and", "or", "not")
TEXT_OPERATORS: Final = ("=", "!=", "~", "!~")
NUMERIC_OPERATORS: Final = ("<", "<=", ">", ">=")
OPERATORS: Final = (*BOOLEAN_OPERATORS, *TEXT_OPERATORS, *NUMERIC_OPERATORS)
PATH_TYPES: Final = ("fact", "trusted")

# Deeper than any rule a person writes; keeps hostile input from exhausting the stack.
MAX_DEPTH: Final = 64

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_DIGITS = re.compile(r"(?:0|[1-9][0-9]*)")
_MISSING: Final = object()


class RuleError(ValidationError):
    """A rule that breaks the grammar; ``details["path"]`` names the bad part."""

    kind = "schema-violation"


def _error(where: str, problem: str, rule: object) -> RuleError:
    return RuleError(
        f"invalid rule at {where}: {problem}", details={"path": where, "submitted": rule}
    )


# -- reading facts --------------------------------------------------------------------


def _text(value: object) -> str | None:
    """A scalar's text as a rule compares it; None for null, arrays and objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return None


def to_number(value: object) -> int | float | None:
    """A number, or a string holding one, as a number; else None (booleans too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return None


def _step(current: object, part: str | int) -> object:
    if isinstance(current, Mapping):
        return current.get(part if isinstance(part, str) else str(part), _MISSING)
    if isinstance(current, list):
        index = part if isinstance(part, int) else int(part) if _DIGITS.fullmatch(part) else -1
        return current[index] if 0 <= index < len(current) else _MISSING
    return _MISSING


def _getter(
    field: str | list[str | int],
) -> Callable[[str, Mapping[str, Any], Mapping[str, Any]], object]:
    if isinstance(field, str):
        return lambda certname, _facts, _trusted: certname
    kind, *parts = field
    trusted = kind == "trusted"

    def get(_certname: str, facts: Mapping[str, Any], trust: Mapping[str, Any]) -> object:
        current: object = trust if trusted else facts
        for part in parts:
            current = _step(current, part)
            if current is _MISSING:
                break
        return current

    return get


# -- validating and compiling ---------------------------------------------------------


def compile_rule(rule: object) -> Matcher:
    """A fast predicate for ``rule``, or :class:`RuleError` naming what is wrong."""
    return _compile(rule, "rule", 0, rule)


def validate_rule(rule: object) -> Rule:
    """``rule`` itself if it is a valid rule, else :class:`RuleError`."""
    compile_rule(rule)
    assert isinstance(rule, list)
    return rule


def match_rule(
    rule: object, certname: str, facts: Mapping[str, Any], trusted: Mapping[str, Any]
) -> bool:
    """Whether the node ``certname`` with ``facts`` and ``trusted`` facts matches ``rule``."""
    return compile_rule(rule)(certname, facts, trusted)


def _compile(rule: object, where: str, depth: int, whole: object) -> Matcher:
    if depth > MAX_DEPTH:
        raise _error(where, f"nested more than {MAX_DEPTH} deep", whole)
    if not isinstance(rule, list) or not rule:
        raise _error(
            where,
            f'expected a non-empty array such as ["=", "name", "web-01"], not {_show(rule)}',
            whole,
        )
    op = rule[0]
    if not isinstance(op, str) or op not in OPERATORS:
        raise _error(
            f"{where}[0]", f"unknown operator {_show(op)}; use one of {', '.join(OPERATORS)}", whole
        )
    if op in ("and", "or"):
        if len(rule) < 2:
            raise _error(where, f"{op!r} needs at least one condition", whole)
        terms = [
            _compile(term, f"{where}[{i}]", depth + 1, whole) for i, term in enumerate(rule[1:], 1)
        ]
        return _combine(op, terms)
    if op == "not":
        if len(rule) != 2:
            raise _error(where, "'not' takes exactly one condition", whole)
        inner = _compile(rule[1], f"{where}[1]", depth + 1, whole)
        return lambda c, f, t: not inner(c, f, t)
    if len(rule) != 3:
        raise _error(
            where,
            f'{op!r} takes a field and a value, like [{op!r}, ["fact", "os", "family"], "Debian"]',
            whole,
        )
    _check_field(rule[1], f"{where}[1]", whole)
    get = _getter(rule[1])
    test = _test(op, rule[2], f"{where}[2]", whole)
    return lambda c, f, t: test(get(c, f, t))


def _combine(op: str, terms: list[Matcher]) -> Matcher:
    # Spelled out for one and two terms, the common cases: a generator per node costs.
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 2:
        a, b = terms
        if op == "and":
            return lambda c, f, t: a(c, f, t) and b(c, f, t)
        return lambda c, f, t: a(c, f, t) or b(c, f, t)
    if op == "and":
        return lambda c, f, t: all(m(c, f, t) for m in terms)
    return lambda c, f, t: any(m(c, f, t) for m in terms)


def _check_field(field: object, where: str, whole: object) -> None:
    if field == "name":
        return
    if isinstance(field, str):
        raise _error(
            where,
            f'unknown field {field!r}: use "name" (the certname), ["fact", {field!r}] '
            f'or ["trusted", {field!r}]',
            whole,
        )
    if not isinstance(field, list) or len(field) < 2:
        raise _error(
            where,
            f'a field is "name" or a path such as ["fact", "os", "family"], not {_show(field)}',
            whole,
        )
    if field[0] not in PATH_TYPES:
        raise _error(
            f"{where}[0]", f'a path starts with "fact" or "trusted", not {_show(field[0])}', whole
        )
    if not isinstance(field[1], str) or not field[1]:
        raise _error(
            f"{where}[1]", f"a fact name is a non-empty string, not {_show(field[1])}", whole
        )
    for i, part in enumerate(field[2:], 2):
        if (
            isinstance(part, bool)
            or not isinstance(part, str | int)
            or (isinstance(part, int) and part < 0)
        ):
            raise _error(
                f"{where}[{i}]",
                f"a path part is a key (string) or an array index (0 or more), not {_show(part)}",
                whole,
            )


def _test(op: str, value: object, where: str, whole: object) -> Callable[[object], bool]:
    if op in ("~", "!~"):
        if not isinstance(value, str):
            raise _error(
                where, f"{op!r} needs a regular expression as a string, not {_show(value)}", whole
            )
        try:
            pattern = re.compile(value)
        except (re.error, OverflowError, RecursionError) as exc:
            raise _error(where, f"invalid regular expression {value!r}: {exc}", whole) from None
        if op == "~":
            return lambda v: (t := _text(v)) is not None and pattern.search(t) is not None
        return lambda v: (t := _text(v)) is None or pattern.search(t) is None
    if op in ("=", "!="):
        target = _text(value) if not isinstance(value, list | dict) else None
        if target is None:
            raise _error(
                where,
                f"{op!r} compares with a string, number or boolean, not {_show(value)}",
                whole,
            )
        if op == "=":
            return lambda v: _text(v) == target
        return lambda v: _text(v) != target
    number = to_number(value)
    if number is None:
        raise _error(
            where,
            f"{op!r} compares numbers: give a number or a string of one, not {_show(value)}",
            whole,
        )
    compare: Callable[[float, float], bool] = {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
    }[op]
    return lambda v: (n := to_number(v)) is not None and compare(n, number)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- pinned nodes ---------------------------------------------------------------------


def _is_pin(term: object) -> bool:
    return (
        isinstance(term, list)
        and len(term) == 3
        and term[0] == "="
        and term[1] == "name"
        and isinstance(term[2], str)
    )


def pinned_nodes(rule: Rule | None) -> list[str]:
    """The certnames pinned by ``rule``: its top-level ``["=", "name", N]`` terms."""
    if rule is None:
        return []
    if _is_pin(rule):
        return [rule[2]]
    if rule[0] == "or":
        return list(dict.fromkeys(term[2] for term in rule[1:] if _is_pin(term)))
    return []


def split_pins(rule: Rule | None) -> tuple[Rule | None, list[str]]:
    """``rule`` without its pins (None if only pins), and the pinned certnames."""
    pins = pinned_nodes(rule)
    return unpin(rule, pins), pins


def pin(rule: Rule | None, certnames: Iterable[str]) -> Rule | None:
    """``rule`` that also matches ``certnames`` whatever their facts, as PE pins them."""
    have = set(pinned_nodes(rule))
    new: Rule = [["=", "name", c] for c in dict.fromkeys(certnames) if c not in have]
    if not new:
        return rule
    if rule is None:
        return ["or", *new]
    if rule[0] == "or":
        return [*rule, *new]
    return ["or", rule, *new]


def unpin(rule: Rule | None, certnames: Iterable[str]) -> Rule | None:
    """``rule`` without the pins of ``certnames``; a node not pinned is ignored."""
    gone = set(certnames)
    if rule is None or not gone:
        return rule
    if _is_pin(rule):
        return None if rule[2] in gone else rule
    if rule[0] != "or":
        return rule
    kept = [term for term in rule[1:] if not (_is_pin(term) and term[2] in gone)]
    if len(kept) == len(rule) - 1:
        return rule
    if not kept:
        return None
    if len(kept) == 1 and not _is_pin(kept[0]):
        return list(kept[0])  # what was pinned onto: ["or", R] means R
    return ["or", *kept]


# -- PuppetDB queries -----------------------------------------------------------------

_PLAIN_PART = re.compile(r"[A-Za-z0-9_\-:/]+")


def _dotted_part(part: str | int, *, key: bool = False) -> str:
    if not key and (isinstance(part, int) or _DIGITS.fullmatch(part)):
        return f"[{part}]"
    part = str(part)
    if _PLAIN_PART.fullmatch(part):
        return f".{part}"
    escaped = part.replace("\\", "\\\\").replace('"', '\\"')
    return f'."{escaped}"'


def inventory_field(field: str | Sequence[str | int]) -> str:
    """The ``inventory`` entity's field for a rule field: ``facts.os.family``."""
    if isinstance(field, str):
        return "certname"
    kind, first, *rest = field
    head = "facts" if kind == "fact" else "trusted"
    return head + _dotted_part(first, key=True) + "".join(_dotted_part(p) for p in rest)


def _equal(field: object, value: object, *, typed: bool) -> Rule:
    """``=`` on text, also on the number or boolean that text spells, as the matcher does."""
    text = _text(value)
    assert text is not None
    clauses: Rule = [["=", field, text]]
    if typed:
        number = to_number(text)
        if number is not None:
            clauses.append(["=", field, number])
        elif text in ("true", "false"):
            clauses.append(["=", field, text == "true"])
    return clauses[0] if len(clauses) == 1 else ["or", *clauses]


def rule_to_ast(rule: object) -> Rule:
    """``rule`` as a PuppetDB AST query on the ``inventory`` entity.

    ``["and", ["=", ["fact", "os", "family"], "Debian"], ["~", "name", "^web"]]`` becomes
    ``["and", ["=", "facts.os.family", "Debian"], ["~", "certname", "^web"]]``. ``!=``
    and ``!~`` become ``not``; numeric comparisons take numbers; ``=`` on text that
    spells a number or boolean also matches that typed value.
    """
    return _to_inventory(validate_rule(rule))


def _to_inventory(rule: Rule) -> Rule:
    op = rule[0]
    if op in BOOLEAN_OPERATORS:
        return [op, *(_to_inventory(term) for term in rule[1:])]
    field, value = inventory_field(rule[1]), rule[2]
    typed = field != "certname"
    if op in ("=", "!="):
        query = _equal(field, value, typed=typed)
        return query if op == "=" else ["not", query]
    if op in ("~", "!~"):
        return ["~", field, value] if op == "~" else ["not", ["~", field, value]]
    return [op, field, to_number(value)]


def rule_to_nodes_query(rule: object) -> Rule:
    """``rule`` as a PuppetDB AST query on the ``nodes`` entity (PE's default translation):
    facts through ``select_fact_contents`` subqueries."""
    return _to_nodes(validate_rule(rule))


def _to_nodes(rule: Rule) -> Rule:
    op = rule[0]
    if op in BOOLEAN_OPERATORS:
        return [op, *(_to_nodes(term) for term in rule[1:])]
    field, value = rule[1], rule[2]
    negate = op in ("!=", "!~")
    base = {"!=": "=", "!~": "~"}.get(op, op)
    if isinstance(field, str):
        query: Rule = (
            _equal("certname", value, typed=False) if base == "=" else [base, "certname", value]
        )
    else:
        kind, first, *rest = field
        path = [
            first,
            *(int(p) if isinstance(p, str) and _DIGITS.fullmatch(p) else p for p in rest),
        ]
        if kind == "trusted":
            path = ["trusted", *path]
        if base == "=":
            test = _equal("value", value, typed=True)
        elif base == "~":
            test = ["~", "value", value]
        else:
            test = [base, "value", to_number(value)]
        query = [
            "in",
            "certname",
            ["extract", "certname", ["select_fact_contents", ["and", ["=", "path", path], test]]],
        ]
    return ["not", query] if negate else query
