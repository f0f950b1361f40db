"""Fact paths in queries: dotted fields and path patterns (pure).

A dotted field names a place in the inventory's ``facts`` or ``trusted``:
``facts.os.release.major``, ``facts.roles[1]``, ``facts."a.b".c`` (a quoted key),
``facts.networking.interfaces.*.mtu`` (any key or index) and PuppetDB's
``facts.partitions.match("sd[ab]\\d").size`` (keys matching a regular expression).
``trusted.x`` is ``facts.trusted.x``.

:class:`Pattern` is such a path with wildcards; :func:`regex_pattern` reads the array
of PuppetDB's ``~>`` operator. An exact pattern (no wildcard) is looked up by its
encoded text; the others are matched against the paths the inventory knows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from podium.inventory.facts import Path
from podium.inventory.query.errors import QueryError

MAX_PATTERN_CHARS: Final = 1024


@dataclass(frozen=True)
class AnyPart:
    """``*``: any key or array index, one level."""


@dataclass(frozen=True)
class MatchPart:
    """A regular expression a key must contain (PostgreSQL's ``~``: a search)."""

    regex: str
    digits_only: bool = False  # "~>" element of digits alone: keys, never indexes

    def matches(self, part: str | int) -> bool:
        if isinstance(part, int):
            return not self.digits_only and checked_regex(self.regex).search(str(part)) is not None
        return checked_regex(self.regex).search(part) is not None


Part = str | int | AnyPart | MatchPart


@dataclass(frozen=True)
class Pattern:
    """A fact path with wildcards."""

    parts: tuple[Part, ...]

    @property
    def exact(self) -> Path | None:
        """The path itself when the pattern has no wildcard."""
        if all(isinstance(p, str | int) for p in self.parts):
            return tuple(p for p in self.parts if isinstance(p, str | int))
        return None

    @property
    def name(self) -> str | None:
        """The top-level fact, if the pattern names one."""
        first = self.parts[0] if self.parts else None
        return first if isinstance(first, str) else None

    def matches(self, path: Path) -> bool:
        if len(path) != len(self.parts):
            return False
        for want, got in zip(self.parts, path, strict=True):
            if isinstance(want, AnyPart):
                continue
            if isinstance(want, MatchPart):
                if not want.matches(got):
                    return False
            elif type(want) is not type(got) or want != got:
                return False
        return True


def checked_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, or a :class:`QueryError` that says what is wrong with it."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise QueryError(f"a regular expression is at most {MAX_PATTERN_CHARS} characters")
    try:
        return _compile(pattern)
    except re.error as error:
        raise QueryError(f"invalid regular expression {pattern!r}: {error}") from error


_CACHE: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    found = _CACHE.get(pattern)
    if found is None:
        if len(_CACHE) > 1024:
            _CACHE.clear()
        found = _CACHE[pattern] = re.compile(pattern)
    return found


def regexp(pattern: str | None, value: object) -> bool | None:
    """SQLite's REGEXP function, as PostgreSQL's ``~``: a search anywhere in the text.
    A pattern Python cannot compile matches nothing (queries check theirs first)."""
    if pattern is None or not isinstance(value, str):
        return None
    try:
        return _compile(pattern).search(value) is not None
    except re.error:
        return None


def parse_dotted(field: str) -> tuple[str, Pattern | None]:
    """``("facts", pattern)`` for ``facts.<path>``, ``("trusted", ...)`` and
    ``("parameters", ...)`` (resources) likewise; ``(field, None)`` for a field
    without a dot."""
    head, dot, rest = field.partition(".")
    if not dot:
        return field, None
    if head not in ("facts", "trusted", "parameters"):
        raise QueryError(
            f"{field!r}: only facts, trusted (inventory) and parameters (resources) take a "
            "dotted path, e.g. facts.os.family"
        )
    parts = _components(rest, field)
    if head == "trusted":
        parts = ["trusted", *parts]
    return head, Pattern(tuple(parts))


def _components(text: str, field: str) -> list[Part]:
    parts: list[Part] = []
    i = 0
    while True:
        if i >= len(text):
            raise QueryError(f"{field!r} ends with a dot: name a key after it")
        if text.startswith('match("', i):
            end = _closing(text, i + 7, '")', field)
            parts.append(MatchPart(text[i + 7 : end]))
            i = end + 2
        elif text[i] == '"':
            end = _closing(text, i + 1, '"', field)
            if end == i + 1:
                raise QueryError(f"{field!r} has an empty quoted key")
            parts.extend(_indexed(text[i + 1 : end], field, quoted=True))
            i = end + 1
            i = _trailing_indexes(text, i, parts, field)
        else:
            end = text.find(".", i)
            end = len(text) if end < 0 else end
            piece = text[i:end]
            if not piece:
                raise QueryError(f"{field!r} has an empty key between two dots")
            parts.extend(_indexed(piece, field, quoted=False))
            i = end
        if i == len(text):
            return parts
        if text[i] != ".":
            raise QueryError(f"{field!r}: expected a dot at character {i + 1} of the path")
        i += 1


def _closing(text: str, start: int, closer: str, field: str) -> int:
    """Where ``closer`` ends a quoted part: not after a backslash, before a dot or the end."""
    at = start
    while True:
        end = text.find(closer, at)
        if end < 0:
            raise QueryError(f'{field!r} has an unterminated quoted key or match("...")')
        after = end + len(closer)
        if text[end - 1] != "\\" and (after == len(text) or text[after] in ".["):
            return end
        at = end + 1


_INDEX = re.compile(r"\[(\d+|\*)\]")


def _indexed(piece: str, field: str, *, quoted: bool) -> list[Part]:
    """``name[1][*]`` → name, 1, any; a quoted key is taken whole."""
    if quoted:
        return [piece]
    if piece == "*":
        return [AnyPart()]
    start = piece.find("[")
    if start < 0:
        return [piece]
    name, tail = piece[:start], piece[start:]
    if not name:
        raise QueryError(f"{field!r}: an index [..] follows a key, as in roles[1]")
    parts: list[Part] = [AnyPart() if name == "*" else name]
    return parts + _indexes(tail, field)


def _indexes(tail: str, field: str) -> list[Part]:
    parts: list[Part] = []
    pos = 0
    while pos < len(tail):
        found = _INDEX.match(tail, pos)
        if found is None:
            raise QueryError(f"{field!r}: an array index is [digits] or [*], as in roles[1]")
        parts.append(AnyPart() if found.group(1) == "*" else int(found.group(1)))
        pos = found.end()
    return parts


def _trailing_indexes(text: str, i: int, parts: list[Part], field: str) -> int:
    end = i
    while end < len(text) and text[end] == "[":
        close = text.find("]", end)
        if close < 0:
            break
        end = close + 1
    if end > i:
        parts.extend(_indexes(text[i:end], field))
    return end


def regex_pattern(value: Any, field: str) -> Pattern:
    """The pattern of ``["~>", "path", [...]]``: regexes match keys (and indexes,
    unless all digits); integers match indexes."""
    if not isinstance(value, list) or not value:
        raise QueryError(f"~> on {field} takes a non-empty array of regular expressions")
    parts: list[Part] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise QueryError(f"~> on {field}: {item!r} is neither a regex nor an index")
        if isinstance(item, int):
            parts.append(item)
        else:
            checked_regex(item)
            parts.append(MatchPart(item, digits_only=item.isascii() and item.isdigit()))
    return Pattern(tuple(parts))


def exact_path(value: Any, field: str) -> Path:
    """A literal path, as ``["=", "path", [...]]`` gives it."""
    if not isinstance(value, list) or not value:
        raise QueryError(f"{field} is compared with a non-empty array of keys and indexes")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise QueryError(f"{field}: {item!r} is neither a key (string) nor an index")
    return tuple(value)
