"""The words of Puppet's type syntax: tokens, and Ruby's regex dialect in Python's.

A token is read on demand (:func:`lex` at a position), so the parser can say what it
expected where a character cannot start one. Regexes are written as in Ruby; Python's
``re`` reads most of them alike, and :func:`ruby_to_python` rewrites the constructs that
differ (``\\z``, ``\\Z``, ``\\h``, ``(?<name>``, inline flags, POSIX classes). Ruby's
``^`` and ``$`` match at every line and its ``\\d``, ``\\w``, ``\\s`` are ASCII, so
:data:`REGEX_FLAGS` are ``MULTILINE | ASCII``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

REGEX_FLAGS: Final = re.MULTILINE | re.ASCII

# -- tokens ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    """A token: ``kind`` is name, word, number, string, regex, punct, end or error.

    ``value`` is the name, word or punctuation, the decoded string, the regex source or,
    for an error, what is wrong; ``spaced`` says whether blanks or comments precede it.
    """

    kind: str
    value: str
    pos: int
    end: int
    spaced: bool
    number: int | float = 0


_SKIP: Final = re.compile(r"(?:[ \t\r\n]+|#[^\n]*|/\*.*?\*/)*", re.DOTALL)
_NAME: Final = re.compile(r"[A-Z][A-Za-z0-9_]*(?:::[A-Z][A-Za-z0-9_]*)*")
_WORD: Final = re.compile(r"[a-z_][A-Za-z0-9_]*(?:::[a-z_][A-Za-z0-9_]*)*")
_NUMBER: Final = re.compile(
    r"-?(?:0[xX][0-9A-Fa-f]+|[0-9]+(?:\.[0-9]+)?(?:[eE]-?[0-9]+)?)(?![A-Za-z0-9_.])"
)
_INT64: Final = 2**63
_DQ_ESCAPES: Final = {"n": "\n", "r": "\r", "t": "\t", "s": " ", "\\": "\\", '"': '"', "'": "'"}
_DQ_ESCAPES_DOLLAR: Final = {**_DQ_ESCAPES, "$": "$"}
_UNICODE_ESCAPE: Final = re.compile(r"u(?:\{([0-9A-Fa-f]{1,6})\}|([0-9A-Fa-f]{4}))")


def lex(text: str, pos: int) -> Token:
    """The token at ``pos`` (after blanks and comments)."""
    start = _SKIP.match(text, pos)
    at = start.end() if start else pos
    spaced = at > pos

    def token(kind: str, value: str, end: int, number: float = 0) -> Token:
        return Token(kind, value, at, end, spaced, number)

    if at >= len(text):
        return token("end", "", at)
    c = text[at]
    if text.startswith("/*", at):
        return token("error", "unterminated comment", at)
    if m := _NAME.match(text, at):
        if text.startswith("::", m.end()):
            return token("error", "each part of a qualified name is capitalized", at)
        return token("name", m[0], m.end())
    if m := _NUMBER.match(text, at):
        value = _number(m[0])
        if isinstance(value, str):
            return token("error", value, at)
        return token("number", m[0], m.end(), value)
    if c in "-0123456789":
        return token("error", "invalid number", at)
    if c in "'\"":
        return _string(text, at, spaced)
    if c == "/":
        return _regex(text, at, spaced)
    if m := _WORD.match(text, at):
        return token("word", m[0], m.end())
    for punct in ("=>", "[", "]", "{", "}", ",", "="):
        if text.startswith(punct, at):
            return token("punct", punct, at + len(punct))
    return token("error", f"unexpected character {c!r}", at)


def _number(lexeme: str) -> int | float | str:
    """The value of a number lexeme, or why it has none."""
    body = lexeme.lstrip("-")
    sign = -1 if lexeme.startswith("-") else 1
    if len(body) > 32:
        return "the number is too long"
    if body[:2] in ("0x", "0X"):
        value: int | float = int(body, 16)
    elif any(c in body for c in ".eE"):
        value = float(body)
        if not math.isfinite(value):
            return "the number is too large"
    elif len(body) > 1 and body.startswith("0"):  # Puppet reads 017 as octal
        if any(c in body for c in "89"):
            return "invalid octal number"
        value = int(body, 8)
    else:
        value = int(body)
    if isinstance(value, int) and not -_INT64 <= sign * value < _INT64:
        return "the number is outside Puppet's 64-bit integers"
    return sign * value


def _string(text: str, at: int, spaced: bool) -> Token:
    quote = text[at]
    out: list[str] = []
    i = at + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return Token("string", "".join(out), at, i + 1, spaced)
        if c == "\\" and quote == "'":
            nxt = text[i + 1 : i + 2]
            out.append(nxt if nxt in ("\\", "'") else "\\")
            i += 2 if nxt in ("\\", "'") else 1
        elif c == "\\":
            nxt = text[i + 1 : i + 2]
            m = _UNICODE_ESCAPE.match(text, i + 1)
            if nxt in _DQ_ESCAPES_DOLLAR:
                out.append(_DQ_ESCAPES_DOLLAR[nxt])
                i += 2
            elif m:
                code = int(m[1] or m[2], 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    return Token("error", "the escape is not a character", i, i, spaced)
                out.append(chr(code))
                i = m.end()
            else:  # Puppet keeps an unknown escape as written
                out.append("\\")
                i += 1
        elif c == "$" and quote == '"' and re.match(r"[{A-Za-z_:]", text[i + 1 : i + 2]):
            return Token("error", "a type cannot interpolate variables", i, i, spaced)
        else:
            out.append(c)
            i += 1
    return Token("error", "unterminated string", at, at, spaced)


def _regex(text: str, at: int, spaced: bool) -> Token:
    end = at
    while True:
        end = text.find("/", end + 1)
        if end < 0:
            return Token("error", "unterminated regular expression", at, at, spaced)
        # A slash after an odd number of backslashes is part of the regex.
        first = end
        while first > at + 1 and text[first - 1] == "\\":
            first -= 1
        if (end - first) % 2 == 0:
            return Token("regex", text[at + 1 : end], at, end + 1, spaced)


# -- Ruby regexes ----------------------------------------------------------------------

# A slash after an odd number of backslashes is escaped.
ESCAPED_SLASH: Final = re.compile(r"(?<!\\)((?:\\\\)*)\\/")
_FLAG_GROUP: Final = re.compile(r"\(\?([imx]*)(?:-([imx]*))?([:)])")
_NAMED_GROUP: Final = re.compile(r"\(\?(?:<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)')")
_POSIX_CLASS: Final = re.compile(r"\[:(\^?)([a-z]+):\]")
_BACKREFERENCE: Final = re.compile(r"\\k<([A-Za-z_]\w*)>")
_CODEPOINTS: Final = re.compile(r"\\u\{ *([0-9a-fA-F]{1,6}(?: +[0-9a-fA-F]{1,6})*) *\}")
_POSIX: Final = {
    "alnum": "a-zA-Z0-9",
    "alpha": "a-zA-Z",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "word": "\\w",
    "xdigit": "0-9a-fA-F",
}


def ruby_to_python(source: str) -> str:
    """The Python form of a Ruby regex, for the constructs whose syntax differs."""
    out: list[str] = []
    # Per open group, the "(?i)"-style groups to close with it: Ruby applies such flags
    # to the rest of the enclosing group, Python only at the start of the pattern.
    pending = [0]
    i = 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            piece, i = _escape(source, i, in_class=False)
        elif c == "[":
            piece, i = _char_class(source, i)
        elif c == ")":
            piece, i = ")" * (pending.pop() if len(pending) > 1 else 0) + ")", i + 1
        elif c == "(" and (m := _NAMED_GROUP.match(source, i)):
            piece, i = f"(?P<{m[1] or m[2]}>", m.end()
            pending.append(0)
        elif c == "(" and (m := _FLAG_GROUP.match(source, i)):
            on, off = m[1].replace("m", "s"), (m[2] or "").replace("m", "s")
            flags = on + (f"-{off}" if off else "")
            piece, i = (f"(?{flags}:" if flags else ("(?:" if m[3] == ":" else "")), m.end()
            if m[3] == ":":
                pending.append(0)
            elif flags:
                pending[-1] += 1
        elif c == "(" and source.startswith("(?#", i):
            end = source.find(")", i)
            end = len(source) if end < 0 else end + 1
            piece, i = source[i:end], end
        else:
            if c == "(":
                pending.append(0)
            piece, i = c, i + 1
        out.append(piece)
    out.append(")" * sum(pending))
    return "".join(out)


def _escape(source: str, i: int, *, in_class: bool) -> tuple[str, int]:
    """The escape at ``source[i]`` (a backslash) in Python syntax, and where it ends."""
    d = source[i + 1 : i + 2]
    if d == "h":
        return ("0-9a-fA-F" if in_class else "[0-9a-fA-F]"), i + 2
    if d == "H" and not in_class:
        return "[^0-9a-fA-F]", i + 2
    if d == "z" and not in_class:
        return r"\Z", i + 2
    if d == "Z" and not in_class:
        return r"(?=\n?\Z)", i + 2
    if d == "e":
        return r"\x1b", i + 2
    if d == "k" and (m := _BACKREFERENCE.match(source, i)):
        return f"(?P={m[1]})", m.end()
    if d == "u" and (m := _CODEPOINTS.match(source, i)):
        return "".join(f"\\U{int(h, 16):08x}" for h in m[1].split()), m.end()
    if d == "u" and source.startswith("{", i + 2):
        raise ValueError("invalid escape \\u{...}: each code point takes 1 to 6 hex digits")
    return source[i : i + 2], i + 2


def _char_class(source: str, i: int) -> tuple[str, int]:
    """The character class opening at ``source[i]`` in Python syntax, and where it ends."""
    out = ["["]
    j = i + 1
    if source.startswith("^", j):
        out.append("^")
        j += 1
    if source.startswith("]", j):  # a leading "]" is a literal in both dialects
        out.append("\\]")
        j += 1
    while j < len(source):
        c = source[j]
        if c == "\\":
            piece, j = _escape(source, j, in_class=True)
            out.append(piece)
            continue
        if c == "]":
            out.append("]")
            return "".join(out), j + 1
        if c == "[":
            m = _POSIX_CLASS.match(source, j)
            if m is None:
                raise ValueError("nested character classes are not supported")
            if m[1] or m[2] not in _POSIX:
                raise ValueError(f"the character class {m[0]} is not supported")
            out.append(_POSIX[m[2]])
            j = m.end()
            continue
        if source.startswith("&&", j):
            raise ValueError("character class intersections (&&) are not supported")
        out.append(c)
        j += 1
    return "".join(out), j  # unterminated: Python says so
