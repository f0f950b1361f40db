"""Reading Puppet type expressions: ``Optional[Struct[{'a' => Integer[0, 5]}]]``.

The grammar is Puppet's, for the types task parameters use::

    type   := Name | Name '[' param (',' param)* ','? ']'     (no space before '[')
    param  := type | number | 'default' | true | false | 'string' | "string" | word
            | /regex/ | '{' (key '=>' type (',' key '=>' type)* ','?)? '}'
    key    := 'string' | word | Optional['string'] | NotUndef['string']

Comments (``#`` to the end of the line, ``/* */``) may stand between tokens. Which
parameters a type takes is checked as they are read, so an error can say what was
expected at that point.

    ValidationError (podium.errors)
    ├── TypeSyntaxError   not a type expression: text, position (0-based), expected
    └── UnknownType       a name that is no type or alias here: name, suggestion
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, NoReturn

from podium.errors import ValidationError
from podium.types.lexer import Token, lex
from podium.types.signatures import (
    BARE,
    BUILDERS,
    BUILTIN_NAMES,
    KEYWORDS,
    KIND_NAMES,
    LEAVES,
    NEEDS_PARAMETERS,
    SIGNATURES,
    UNSUPPORTED,
    Kinds,
    Value,
)
from podium.types.tree import ANY, AliasType, Presence, PType, Regex, StructMember, StructType

if TYPE_CHECKING:
    from podium.types.aliases import TypeAliases

MAX_DEPTH: Final = 64
"""Deepest nesting of type parameters read; deeper text is refused, not parsed."""

_END: Final = object()  # what Parser.arg() returns on the closing ']'
_LITERALS: Final = frozenset({"true", "false", "default", "undef"})


class TypeSyntaxError(ValidationError):
    """Text that is not a type expression; ``position`` is 0-based, ``expected`` a phrase."""

    def __init__(
        self, text: str, position: int, expected: str, *, problem: str | None = None
    ) -> None:
        self.text = text
        self.position = position
        self.expected = expected
        self.reason = problem or f"expected {expected}"
        where, excerpt = locate(text, position)
        super().__init__(
            f'invalid type "{_shorten(text)}": {self.reason} at {where}\n{excerpt}',
            details={"type": text, "position": position, "expected": expected},
        )


class UnknownType(ValidationError):
    """A type name that is neither a supported type nor one of the aliases given."""

    def __init__(
        self,
        name: str,
        *,
        text: str,
        position: int,
        suggestion: str | None = None,
        unsupported: bool = False,
    ) -> None:
        self.name = name
        self.text = text
        self.position = position
        self.suggestion = suggestion
        msg = f"{name} is a Puppet type that task parameters cannot use" if unsupported else ""
        msg = msg or f"unknown type {name}"
        if " ".join(text.split()) != name:
            msg += f' in "{_shorten(text)}"'
        if suggestion:
            msg += f" (did you mean {suggestion}?)"
        super().__init__(msg, details={"type": text, "name": name, "suggestion": suggestion})


def locate(text: str, position: int) -> tuple[str, str]:
    """Where ``position`` is ("column 4", or "line 2, column 4") and its line with a caret."""
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    line = text[start : len(text) if end < 0 else end].replace("\t", " ")
    column = position - start
    where = f"column {column + 1}"
    if "\n" in text:
        where = f"line {text.count(chr(10), 0, position) + 1}, {where}"
    # A long line is shown as a window around the position.
    left = max(0, min(column - 40, len(line) - 76))
    shown = ("…" if left else "") + line[left : left + 76] + ("…" if len(line) > left + 76 else "")
    caret = " " * (column - left + (1 if left else 0)) + "^"
    return where, f"  {shown}\n  {caret}"


def _shorten(text: str) -> str:
    """``text`` on one line, cut to a readable length."""
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:79] + "…"


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``name`` was probably meant to be, if one is close."""
    by_lower = {c.lower(): c for c in candidates}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.75)
    return by_lower[close[0]] if close else None


# -- parsing ---------------------------------------------------------------------------


class Parser:
    """A recursive-descent reader of type expressions over ``text`` (package-internal).

    ``refs`` collects the alias names met. With ``lenient``, names that are no built-in
    type stand for aliases defined elsewhere (and become Any): an alias file is read
    before the aliases it names are known.
    """

    def __init__(
        self, text: str, aliases: TypeAliases | None, *, lenient: bool = False, start: int = 0
    ) -> None:
        self.text = text
        self.aliases = aliases
        self.lenient = lenient
        self.refs: list[str] = []
        self.last_end = start
        self.tok = lex(text, start)

    def advance(self) -> Token:
        tok = self.tok
        self.last_end = tok.end
        self.tok = lex(self.text, tok.end)
        return tok

    def fail(self, expected: str, *, at: int | None = None, problem: str | None = None) -> NoReturn:
        if at is None and self.tok.kind == "error":
            problem = problem or self.tok.value
        raise TypeSyntaxError(
            self.text, self.tok.pos if at is None else at, expected, problem=problem
        )

    def at_punct(self, punct: str) -> bool:
        return self.tok.kind == "punct" and self.tok.value == punct

    def expect(self, punct: str, expected: str) -> Token:
        if not self.at_punct(punct):
            self.fail(expected)
        return self.advance()

    def parse(self) -> PType:
        """The whole text as one type."""
        t = self.type_expr(0)
        if self.tok.kind != "end":
            self.fail("the end of the type")
        return t

    def type_expr(self, depth: int) -> PType:
        tok = self.tok
        if tok.kind != "name":
            if tok.kind == "word" and (meant := suggest(tok.value, BUILTIN_NAMES)):
                raise UnknownType(tok.value, text=self.text, position=tok.pos, suggestion=meant)
            self.fail("a type")
        if depth >= MAX_DEPTH:
            self.fail("a simpler type", problem=f"the type nests more than {MAX_DEPTH} levels")
        self.advance()
        name = tok.value
        opened = self.at_punct("[")
        if opened and self.tok.spaced:
            self.fail("'[' right after the name", problem=f"no space may precede {name}'s '['")
        if name not in BUILTIN_NAMES or name in LEAVES:
            node = LEAVES.get(name) or self.alias(tok)
            if opened:
                self.fail("no parameters", problem=f"{name} takes no parameters")
            return node
        if not opened:
            if name in NEEDS_PARAMETERS:
                self.fail(f"'[' ({name} needs parameters)")
            return BARE[name]
        self.advance()
        if name == "Struct":
            return self.struct(depth + 1)
        return BUILDERS[name](self, *self.params(name, SIGNATURES[name], depth + 1))

    def alias(self, tok: Token) -> PType:
        name = tok.value
        if name in UNSUPPORTED:
            raise UnknownType(name, text=self.text, position=tok.pos, unsupported=True)
        if self.lenient:
            return ANY
        if self.aliases is None or name not in self.aliases:
            known = BUILTIN_NAMES | (self.aliases.names() if self.aliases else set())
            meant = suggest(name, known)
            raise UnknownType(name, text=self.text, position=tok.pos, suggestion=meant)
        self.refs.append(name)
        return AliasType(name, self.aliases)

    def params(
        self, name: str, signature: Callable[[list[Value]], Kinds | None], depth: int
    ) -> tuple[list[Value], list[int]]:
        """The parameters up to the closing ']', each of a kind ``signature`` allows."""
        values: list[Value] = []
        positions: list[int] = []
        while True:
            pos = self.tok.pos
            value = self.arg(signature(values) or (), depth, closing=bool(values))
            if value is _END:
                return values, positions
            values.append(value)  # type: ignore[arg-type]  # _END is ruled out above
            positions.append(pos)
            if not self.more(full=signature(values) is None, name=name):
                return values, positions

    def arg(self, kinds: Kinds, depth: int, *, closing: bool) -> Value | object:
        tok = self.tok
        if closing and self.at_punct("]"):
            self.advance()
            return _END
        if tok.kind == "number" and "number" in kinds:
            return self.advance().number
        if tok.kind == "word" and tok.value == "default" and "default" in kinds:
            self.advance()
            return None
        if tok.kind == "word" and tok.value in ("true", "false") and "bool" in kinds:
            return self.advance().value == "true"
        if "string" in kinds and tok.kind == "word" and tok.value in KEYWORDS:
            self.fail("a string", problem=f"{tok.value} is a Puppet keyword: quote it")
        if "string" in kinds and tok.kind in ("string", "word"):
            return self.advance().value
        if tok.kind == "regex" and "regex" in kinds:
            return self.regex(self.advance().value, tok.pos, "/")
        if tok.kind in ("name", "word") and "type" in kinds:
            return self.type_expr(depth)
        names = [KIND_NAMES[k] for k in kinds] + (["']'"] if closing else [])
        self.fail(", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0])

    def more(self, *, full: bool, name: str) -> bool:
        """After a parameter: True when another follows, False once ']' is read."""
        if self.at_punct(","):
            self.advance()
            if not full:
                return True
        if self.at_punct("]"):  # a trailing comma may precede it
            self.advance()
            return False
        self.fail(f"']' (no more parameters for {name})" if full else "',' or ']'")

    def regex(self, source: str, pos: int, quote: str) -> Regex:
        try:
            return Regex.from_ruby(source)
        except ValueError as exc:
            shown = f"/{source}/" if quote == "/" else repr(source)
            problem = f"invalid regular expression {shown}: {exc}"
            self.fail("a valid regular expression", at=pos, problem=problem)

    def struct(self, depth: int) -> StructType:
        self.expect("{", "'{' (Struct takes a hash of member names and types)")
        members: dict[str, StructMember] = {}
        while not self.at_punct("}"):
            pos = self.tok.pos
            name, presence = self.struct_key()
            if not name:
                self.fail("a member name that is not empty", at=pos)
            if name in members:
                self.fail("another member name", at=pos, problem=f"the member {name!r} is repeated")
            self.expect("=>", "'=>'")
            members[name] = StructMember(name, self.type_expr(depth), presence)
            if not self.at_punct("}"):
                self.expect(",", "',' or '}'")
        self.advance()
        self.more(full=True, name="Struct")
        return StructType(tuple(members.values()))

    def struct_key(self) -> tuple[str, Presence]:
        tok = self.tok
        # Puppet takes its keywords as hash keys, but true, false... are no strings.
        if tok.kind == "string" or (tok.kind == "word" and tok.value not in _LITERALS):
            return self.advance().value, "auto"
        if tok.kind == "name" and tok.value in ("Optional", "NotUndef"):
            self.advance()
            self.expect("[", "'['")
            if self.tok.kind != "string" and self.tok.kind != "word":
                self.fail("a member name (a string)")
            name = self.advance().value
            self.expect("]", "']'")
            return name, ("optional" if tok.value == "Optional" else "required")
        self.fail("a member name: 'name', Optional['name'] or NotUndef['name']")


def parse_type(text: str, aliases: TypeAliases | None = None) -> PType:
    """The tree of a Puppet type expression; names not built in must be in ``aliases``.

    Raises :class:`TypeSyntaxError` or :class:`UnknownType`, or the error of an alias
    definition met (aliases are resolved when first named).
    """
    return _parse_cached(text, aliases)


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str, aliases: TypeAliases | None) -> PType:
    parser = Parser(text, aliases)
    tree = parser.parse()
    if aliases is not None:
        for name in parser.refs:
            aliases.resolve(name)
    return tree


def parse_definition(text: str, aliases: TypeAliases) -> tuple[PType, list[str]]:
    """An alias definition's tree, and the aliases it names (left unresolved)."""
    parser = Parser(text, aliases)
    return parser.parse(), parser.refs
