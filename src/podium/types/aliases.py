"""Type aliases, as a module's ``types/<name>.pp`` files define them.

    type Mymod::Port = Integer[1, 65535]

:func:`parse_alias_file` reads such a file's text into ``(name, type text)`` pairs; a
:class:`TypeAliases` holds a set of them and resolves each when first named, with the
aliases it names in turn. Aliases may be recursive (``type Tree = Array[Variant[String,
Tree]]``) as long as the recursion goes through a container: an alias that stands for
itself (``type A = Variant[A, String]``) could never be checked, and is refused.

    ValidationError (podium.errors)
    └── TypeAliasError    an alias whose definition is wrong: ``alias`` names it
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import Final

from podium.errors import ValidationError
from podium.types.parser import Parser, TypeSyntaxError, UnknownType, locate, parse_definition
from podium.types.signatures import BUILTIN_NAMES, UNSUPPORTED
from podium.types.tree import (
    AliasType,
    NotUndefType,
    OptionalType,
    PType,
    SensitiveType,
    VariantType,
)

_ALIAS_NAME: Final = re.compile(r"[A-Z][A-Za-z0-9_]*(?:::[A-Z][A-Za-z0-9_]*)*")


class TypeAliasError(ValidationError):
    """A type alias whose definition does not parse, names unknown types, or loops."""

    def __init__(self, alias: str, msg: str) -> None:
        self.alias = alias
        super().__init__(msg, details={"alias": alias})


class TypeAliases:
    """A set of type aliases (name → type text), each parsed when first used.

    Immutable once made, so parsed types can be cached per set. Names are checked here;
    definitions on first use, by :func:`parse_type` naming them or :meth:`resolve`.
    """

    def __init__(self, definitions: Mapping[str, str] | None = None) -> None:
        self._definitions = dict(definitions or {})
        for name in self._definitions:
            _check_name(name)
        self._resolved: dict[str, PType] = {}
        self._lock = threading.Lock()

    def names(self) -> set[str]:
        """The alias names."""
        return set(self._definitions)

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __repr__(self) -> str:
        return f"TypeAliases({sorted(self._definitions)!r})"

    def definition(self, name: str) -> str:
        """The type text ``name`` was defined with."""
        return self._definitions[name]

    def resolve(self, name: str) -> PType:
        """The tree alias ``name`` stands for; raises :class:`TypeAliasError` if it is wrong."""
        found = self._resolved.get(name)
        if found is not None:
            return found
        with self._lock:
            if name not in self._resolved:
                fresh = self._parse_reachable(name)
                _refuse_loops(fresh, {**self._resolved, **fresh})
                self._resolved.update(fresh)
            return self._resolved[name]

    def _parse_reachable(self, name: str) -> dict[str, PType]:
        """``name`` and the aliases it reaches that are not resolved yet, parsed."""
        fresh: dict[str, PType] = {}
        pending = [name]
        while pending:
            alias = pending.pop()
            if alias in fresh or alias in self._resolved:
                continue
            if alias not in self._definitions:
                raise UnknownType(alias, text=alias, position=0)
            try:
                fresh[alias], refs = parse_definition(self._definitions[alias], self)
            except (TypeSyntaxError, UnknownType) as exc:
                raise TypeAliasError(alias, f"in type alias {alias}: {exc.msg}") from exc
            pending.extend(refs)
        return fresh


def _check_name(name: str) -> None:
    if not _ALIAS_NAME.fullmatch(name):
        raise TypeAliasError(name, f"invalid type alias name {name!r}: use Mymod::Name")
    if name in BUILTIN_NAMES or name in UNSUPPORTED:
        raise TypeAliasError(name, f"{name} is a built-in type: an alias needs another name")


def _bare_refs(t: PType) -> Iterator[str]:
    """The aliases ``t`` may stand for without entering a container."""
    match t:
        case AliasType(name=name):
            yield name
        case OptionalType(type=inner) | NotUndefType(type=inner) | SensitiveType(type=inner):
            yield from _bare_refs(inner)
        case VariantType(types=types):
            for member in types:
                yield from _bare_refs(member)


def _refuse_loops(fresh: Mapping[str, PType], trees: Mapping[str, PType]) -> None:
    """Raise for a fresh alias that reaches itself without entering a container."""
    for start in fresh:
        stack: list[tuple[str, tuple[str, ...]]] = [(start, (start,))]
        seen = {start}
        while stack:
            name, trail = stack.pop()
            for ref in _bare_refs(trees[name]):
                if ref == start:
                    loop = " -> ".join((*trail, start))
                    raise TypeAliasError(
                        start,
                        f"type alias {start} stands for itself ({loop}): a recursive alias "
                        "must recurse inside an Array, Hash, Struct or Tuple",
                    )
                if ref not in seen:
                    seen.add(ref)
                    stack.append((ref, (*trail, ref)))


def parse_alias_file(text: str, filename: str) -> list[tuple[str, str]]:
    """The ``type Name = <type>`` statements of a ``.pp`` file, as (name, type text).

    Comments are allowed between and inside statements. Errors name the file and line;
    the types are read for syntax only (the aliases they name may be defined elsewhere).
    """
    try:
        return _statements(text)
    except (TypeSyntaxError, UnknownType) as exc:
        line = text.count("\n", 0, exc.position) + 1
        reason = exc.reason if isinstance(exc, TypeSyntaxError) else exc.msg
        _, excerpt = locate(text, exc.position)
        raise ValidationError(
            f"{filename}:{line}: {reason}\n{excerpt}",
            details={"file": filename, "line": line},
        ) from exc


def _statements(text: str) -> list[tuple[str, str]]:
    parser = Parser(text, None, lenient=True)
    found: list[tuple[str, str]] = []
    while parser.tok.kind != "end":
        if parser.tok.kind != "word" or parser.tok.value != "type":
            parser.fail("'type' (an alias reads: type Mymod::Name = <type>)")
        parser.advance()
        if parser.tok.kind != "name":
            parser.fail("the alias name, such as Mymod::Port")
        name = parser.advance()
        if name.value in BUILTIN_NAMES or name.value in UNSUPPORTED:
            problem = f"{name.value} is a built-in type: an alias needs another name"
            parser.fail("an alias name", at=name.pos, problem=problem)
        if any(name.value == seen for seen, _ in found):
            parser.fail("another alias name", at=name.pos, problem=f"{name.value} is repeated")
        parser.expect("=", "'='")
        start = parser.tok.pos
        parser.type_expr(0)
        found.append((name.value, text[start : parser.last_end]))
    return found
