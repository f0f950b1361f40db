"""PQL text to PuppetDB's AST query, as PuppetDB's own PQL front end builds it.

    >>> parse_pql("inventory[certname] { facts.os.family = 'Debian' limit 10 }")
    ['from', 'inventory', ['extract', ['certname'], ['=', 'facts.os.family', 'Debian']],
     ['limit', 10]]

The grammar (``grammar.lark``) is PuppetDB's; lark reads it with an LALR parser, built
once per process, and :class:`_Builder` turns the tree into the AST without recursion.
Every way the text can be wrong ends as a :class:`PQLSyntaxError` with a line, a column
and what would have been valid there: lark's own exceptions never leave this module.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput, UnexpectedToken

from podium.inventory.pql.errors import PQLSyntaxError

# The entities a query (or subquery) may be about: PuppetDB's PQL entities and
# `producers`. grammar.lark's ENTITY terminal lists the same names.
ENTITIES = (
    "nodes",
    "inventory",
    "facts",
    "fact_contents",
    "fact_paths",
    "factsets",
    "resources",
    "reports",
    "events",
    "catalogs",
    "edges",
    "environments",
    "producers",
    "packages",
    "package_inventory",
)

# Limits
MAX_QUERY_BYTES = 64 * 1024
MAX_DEPTH = 100  # nested subqueries, `!`, `and`/`or` groups and arrays

_INT64 = (-(2**63), 2**63 - 1)

# How error messages say each terminal, in the order they list them.
_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "NAME": ("a field",),
    "DOTTED": ("a field",),
    "ENTITY": ("an entity",),
    "FUNCTION": ("a function",),
    "DQSTRING": ("a string",),
    "SQSTRING": ("a string",),
    "REAL": ("a number",),
    "INTEGER": ("an integer",),
    "TRUE": ("'true'",),
    "FALSE": ("'false'",),
    "_EQ": ("'='",),
    "_NE": ("'!='",),
    "_MATCH": ("'~'",),
    "_NOT_MATCH": ("'!~'",),
    "_ARRAY_MATCH": ("'~>'",),
    "INEQUALITY": ("'<'", "'<='", "'>'", "'>='"),
    "_IN": ("'in'",),
    "_IS": ("'is'",),
    "_NOT": ("'not'",),
    "_NULL": ("'null'",),
    "BANG": ("'!'",),
    "_LPAR": ("'('",),
    "_LSQB": ("'['",),
    "_AND": ("'and'",),
    "_OR": ("'or'",),
    "DIRECTION": ("'asc'", "'desc'"),
    "_COMMA": ("','",),
    "LIMIT": ("'limit'",),
    "OFFSET": ("'offset'",),
    "ORDER_BY": ("'order by'",),
    "GROUP_BY": ("'group by'",),
    "_RPAR": ("')'",),
    "_RSQB": ("']'",),
    "_LBRACE": ("'{'",),
    "_RBRACE": ("'}'",),
    "$END": ("the end of the query",),
}
_ORDER = {name: index for index, name in enumerate(_DESCRIPTIONS)}

_MODIFIERS = frozenset({"LIMIT", "OFFSET", "ORDER_BY", "GROUP_BY"})

# Rules whose nesting counts towards MAX_DEPTH.
_NESTING = frozenset(
    {"query", "in_query", "subquery", "negation", "or_expr", "and_expr", "array", "literal_list"}
)


def parse_pql(
    text: str,
    *,
    # Limits
    max_bytes: int = MAX_QUERY_BYTES,
    max_depth: int = MAX_DEPTH,
) -> list[Any]:
    """The AST query PuppetDB's ``/pdb/query/v4`` takes for the PQL ``text``.

    ``["from", <entity>, <query>?, <paging clauses>...]``; raises
    :class:`PQLSyntaxError` for anything that is not such a query.
    """
    if not isinstance(text, str):
        raise TypeError(f"a PQL query is a str, not {type(text).__name__}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PQLSyntaxError(text, exc.start, "the query is not valid Unicode text") from exc
    if size > max_bytes:
        raise PQLSyntaxError(
            text, 0, f"the query is {size} bytes long, more than the {max_bytes} allowed"
        )
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from exc
    ast: list[Any] = _Builder(text, max_depth).build(tree)
    return ast


@functools.cache
def _lark() -> Lark:
    grammar = resources.files("podium.inventory.pql").joinpath("grammar.lark")
    return Lark(
        grammar.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        maybe_placeholders=True,
    )


# Building the AST


@dataclass(frozen=True, slots=True)
class _Where:
    """What a pair of braces holds: a filter, and a group by or paging clauses."""

    filter: list[Any] | None
    modifiers: list[list[Any]]
    group_by: bool


class _Builder:
    """Turns lark's tree into the AST, children first, with a stack instead of recursion.

    Each method takes a node's children, trees already built and tokens as they are.
    """

    def __init__(self, text: str, max_depth: int) -> None:
        self.text = text
        self.max_depth = max_depth

    def build(self, root: Tree[Token]) -> Any:
        built: list[Any] = []
        todo: list[tuple[Tree[Token], int, bool]] = [(root, 0, False)]
        while todo:
            node, depth, ready = todo.pop()
            if not ready:
                if node.data in _NESTING:
                    depth += 1
                    if depth > self.max_depth:
                        raise self._error(
                            _first_position(node),
                            f"the query nests more than {self.max_depth} levels deep",
                        )
                todo.append((node, depth, True))
                todo.extend(
                    (child, depth, False)
                    for child in reversed(node.children)
                    if isinstance(child, Tree)
                )
                continue
            count = sum(isinstance(child, Tree) for child in node.children)
            values = iter(built[len(built) - count :])
            del built[len(built) - count :]
            args = [next(values) if isinstance(c, Tree) else c for c in node.children]
            method: Callable[[list[Any]], Any] = getattr(self, str(node.data))
            built.append(method(args))
        return built[0]

    def _error(self, position: int | None, reason: str) -> PQLSyntaxError:
        return PQLSyntaxError(self.text, position or 0, reason)

    # Queries

    def start(self, args: list[Any]) -> Any:
        return args[0]

    def query(self, args: list[Any]) -> list[Any]:
        entity, *projection, where = args
        # PuppetDB's layout: the filter and a group by go inside the extract, paging
        # clauses follow it.
        clauses: list[Any] = [*projection]
        if where.filter is not None:
            clauses.append(where.filter)
        if where.group_by:
            clauses.extend(where.modifiers)
            paging = []
        else:
            paging = where.modifiers
        if projection and len(clauses) > 1:
            clauses = [[*clauses[0], *clauses[1:]]]
        return ["from", str(entity), *clauses, *paging]

    in_query = query

    def projection(self, args: list[Any]) -> list[Any]:
        return ["extract", args[0] or []]

    def where(self, args: list[Any]) -> _Where:
        filter_, modifiers = args
        if modifiers is None:
            return _Where(filter_, [], group_by=False)
        if modifiers[0] == "group_by":
            return _Where(filter_, [modifiers], group_by=True)
        return _Where(filter_, modifiers, group_by=False)

    def subquery(self, args: list[Any]) -> list[Any]:
        entity, filter_ = args
        return ["subquery", str(entity)] + ([filter_] if filter_ is not None else [])

    def fieldlist(self, args: list[Any]) -> list[Any]:
        return args

    def function(self, args: list[Any]) -> list[Any]:
        name, arguments = args
        return ["function", str(name), *(arguments or [])]

    def arguments(self, args: list[Any]) -> list[Any]:
        return args

    # Filters

    def or_expr(self, args: list[Any]) -> list[Any]:
        return ["or", *_flatten("or", args)]

    def and_expr(self, args: list[Any]) -> list[Any]:
        return ["and", *_flatten("and", args)]

    def negation(self, args: list[Any]) -> list[Any]:
        return ["not", args[1]]

    def equal(self, args: list[Any]) -> list[Any]:
        return ["=", args[0], args[1]]

    def not_equal(self, args: list[Any]) -> list[Any]:
        return ["not", ["=", args[0], args[1]]]

    def regex(self, args: list[Any]) -> list[Any]:
        return ["~", args[0], args[1]]

    def not_regex(self, args: list[Any]) -> list[Any]:
        return ["not", ["~", args[0], args[1]]]

    def regex_array(self, args: list[Any]) -> list[Any]:
        return ["~>", args[0], args[1:]]

    def inequality(self, args: list[Any]) -> list[Any]:
        field, operator, value = args
        return [str(operator), field, value]

    def in_field(self, args: list[Any]) -> list[Any]:
        return ["in", args[0], args[1]]

    in_fields = in_field

    def is_null(self, args: list[Any]) -> list[Any]:
        return ["null?", args[0], True]

    def is_not_null(self, args: list[Any]) -> list[Any]:
        return ["null?", args[0], False]

    # Values

    def field(self, args: list[Token]) -> str:
        return str(args[0])

    def literal_list(self, args: list[Any]) -> list[Any]:
        return ["array", args]

    def array(self, args: list[Any]) -> list[Any]:
        return args

    def string(self, args: list[Token]) -> str:
        (token,) = args
        if token.type == "SQSTRING":
            return token[1:-1].replace("\\'", "'")
        try:
            value = json.loads(token)
        except json.JSONDecodeError as exc:
            position = (token.start_pos or 0) + exc.pos
            raise self._error(position, _bad_string(token, exc.pos)) from exc
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise self._error(
                token.start_pos, "this string holds half of a surrogate pair (\\ud800-\\udfff)"
            ) from exc
        assert isinstance(value, str)
        return value

    def number(self, args: list[Token]) -> int | float:
        (token,) = args
        if token.type == "INTEGER":
            return self._integer(token)
        value = float(token)
        if not math.isfinite(value):
            raise self._error(token.start_pos, f"the number {_show(token)} is too large")
        return value

    def boolean(self, args: list[Token]) -> bool:
        return args[0].type == "TRUE"

    def _integer(self, token: Token) -> int:
        # Like PuppetDB, a 64-bit integer; the length check keeps int() off huge texts.
        value = int(token) if len(token.lstrip("-")) <= 19 else None
        if value is None or not _INT64[0] <= value <= _INT64[1]:
            raise self._error(
                token.start_pos, f"the integer {_show(token)} does not fit in 64 bits"
            )
        return value

    # Modifiers

    def group_by(self, args: list[Any]) -> list[Any]:
        return ["group_by", *args[1]]

    def paging(self, args: list[tuple[Token, list[Any]]]) -> list[list[Any]]:
        seen: set[str] = set()
        for keyword, clause in args:
            if clause[0] in seen:
                raise self._error(keyword.start_pos, f"{_show(keyword)} is given twice")
            seen.add(clause[0])
        return [clause for _, clause in args]

    def limit(self, args: list[Token]) -> tuple[Token, list[Any]]:
        keyword, count = args
        value = self._integer(count)
        if value < 1:
            raise self._error(count.start_pos, "the limit must be a positive integer")
        return keyword, ["limit", value]

    def offset(self, args: list[Token]) -> tuple[Token, list[Any]]:
        keyword, count = args
        value = self._integer(count)
        if value < 0:
            raise self._error(count.start_pos, "the offset must not be negative")
        return keyword, ["offset", value]

    def order_by(self, args: list[Any]) -> tuple[Token, list[Any]]:
        keyword, *params = args
        return keyword, ["order_by", params]

    def order_param(self, args: list[Token]) -> Any:
        field, direction = args
        if field in ("asc", "desc"):
            # PuppetDB's grammar will not take these words for field names here.
            raise self._error(
                field.start_pos, f"expected a field to order by but found {_show(field)}"
            )
        return str(field) if direction is None else [str(field), str(direction)]


def _first_position(node: Tree[Token]) -> int:
    """Where the first token under ``node`` starts."""
    todo: list[Tree[Token] | Token | None] = [node]
    while todo:
        item = todo.pop()
        if isinstance(item, Token):
            return item.start_pos or 0
        if isinstance(item, Tree):
            todo.extend(reversed(item.children))
    return 0  # pragma: no cover - every nesting rule holds a token


def _flatten(operator: str, operands: Iterable[Any]) -> Iterator[Any]:
    """PuppetDB's n-ary and/or: an operand that is the same operator gives its operands."""
    for operand in operands:
        if operand[0] == operator:
            yield from operand[1:]
        else:
            yield operand


def _bad_string(token: str, offset: int) -> str:
    char = token[offset] if offset < len(token) else ""
    if char == "\\":
        return (
            f"'{token[offset : offset + 2]}' is not an escape in a double-quoted string, which"
            " PQL reads as JSON: write \\\\ for a backslash, or use a single-quoted string"
        )
    if char and ord(char) < 0x20:
        return f"a double-quoted string cannot hold {char!r} as it is: write it as an escape"
    return "this double-quoted string is not a valid JSON string"


# Syntax errors


def _syntax_error(text: str, exc: UnexpectedInput) -> PQLSyntaxError:
    """The PQLSyntaxError that says what lark found wrong, in PQL's words."""
    parser: Any = exc.interactive_parser
    # accepts() tries each terminal on a copy of the parser: exact, where the parse
    # table's own list can hold terminals that a reduction would then refuse.
    accepts: set[str] = set(parser.accepts()) if parser is not None else set()
    token: Token | None = None
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        position, found = len(text.rstrip()), "the end of the query"
    elif isinstance(exc, UnexpectedToken):
        token = exc.token
        position, found = token.start_pos or 0, _show(token)
    else:
        position = exc.pos_in_stream or 0
        found = repr(text[position]) if position < len(text) else "the end of the query"
    if not accepts:  # pragma: no cover - lark gives every error its parser
        accepts = set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())
    expected = _expected(accepts, parser)
    previous = _previous_token(text, position)
    after = f" after {_show(previous)}" if previous is not None else ""
    reason = f"expected {_say(expected)}{after} but found {found}"
    if token is not None and token.type == "NAME" and "ENTITY" in accepts and "NAME" not in accepts:
        reason = f"unknown entity {_show(token)}: expected {_say(expected)}"
    return PQLSyntaxError(
        text,
        position,
        _better_reason(text, position, reason, accepts, token, previous),
        expected=expected,
    )


def _better_reason(
    text: str,
    position: int,
    reason: str,
    accepts: set[str],
    token: Token | None,
    previous: Token | None,
) -> str:
    """The reason, said better for the mistakes people make most."""
    if not text.strip():
        return f"the query is empty: {reason}"
    if token is None and position < len(text) and text[position] in "\"'":
        return "this string has no closing quote"
    if token is None and text[position : position + 1] == "#":
        return f"{reason}; PQL has no comments"
    if token is None and text[position : position + 1] == "." and previous is not None:
        if previous.type == "DOTTED" or previous in ("facts", "trusted", "parameters"):
            return f"{reason}; each '.' of a field path must be followed by a key"
        return f"{reason}; only facts, trusted and parameters take a dotted path"
    if token is not None and str(token) in ("and", "or") and f"_{token.upper()}" in accepts:
        return f"{_show(token)} needs whitespace on both sides"
    if token is not None and token.type == "_NULL":
        return f"{reason}; test for null with 'is null' or 'is not null'"
    if previous is not None and "_EQ" in accepts:
        # The word before was taken for a field name.
        if previous.type == "NAME" and token is not None and token.type == "_LBRACE":
            return f"{_show(previous)} is not an entity, so it cannot open a subquery: {reason}"
        if str(previous) == "not":
            return f"{reason}; PQL negates with '!', as in !(certname = 'web1')"
        if previous.type in _MODIFIERS:
            return (
                f"{_show(previous)} cannot go here: 'limit', 'offset', 'order by' and"
                " 'group by' come last in a query's braces, after the filter, and an"
                " implicit subquery takes none"
            )
    return reason


def _expected(accepts: set[str], parser: Any) -> list[str]:
    """What the terminals in ``accepts`` are, said for people, in a stable order."""
    names = sorted(accepts, key=lambda name: _ORDER.get(name, len(_ORDER)))
    described: list[str] = []
    for name in names:
        if name == "ENTITY" and "NAME" not in accepts:
            # Where only an entity fits, name them all.
            described.extend(f"'{entity}'" for entity in ENTITIES)
            continue
        if name == "ENTITY":
            if parser is not None and _opens_subquery(parser):
                described.append("a subquery")
            continue
        described.extend(_DESCRIPTIONS.get(name, (name,)))
    if "a number" in described and "an integer" in described:
        described.remove("an integer")
    return list(dict.fromkeys(described))


def _opens_subquery(parser: Any) -> bool:
    """Whether an entity here may start an implicit subquery (not only name a field)."""
    probe = parser.copy(deepcopy_values=False)
    try:
        probe.feed_token(Token("ENTITY", "nodes"))
    except UnexpectedInput:  # pragma: no cover - ENTITY was in the accepted set
        return False
    return "_LBRACE" in probe.accepts()


def _previous_token(text: str, position: int) -> Token | None:
    """The last token that ends at or before ``position``, lexed again."""
    previous = None
    try:
        for token in _lark().lex(text):
            if token.end_pos is None or token.end_pos > position:
                break
            previous = token
    except UnexpectedInput:
        pass
    return previous


def _show(token: str) -> str:
    """A token as an error message quotes it, cut short when long."""
    text = str(token)
    if len(text) > 30:
        text = text[:27] + "..."
    return f"'{text}'" if "'" not in text else f'"{text}"'


def _say(items: list[str]) -> str:
    if not items:
        return "nothing more"
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} or {items[1]}"
    return f"one of {', '.join(items[:-1])} or {items[-1]}"
