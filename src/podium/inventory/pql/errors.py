"""The error a PQL query that cannot be read raises, with its place and a caret under it.

    ValidationError (podium.errors)
    └── PQLSyntaxError     the text is not a PQL query Podium can run: HTTP 400

Its message reads like PuppetDB's ("PQL parse error at line 1, column 9: ...").
"""

from __future__ import annotations

from collections.abc import Sequence

from podium.errors import ValidationError

# An excerpt longer than this is cut to a window around the error.
_EXCERPT_WIDTH = 76


class PQLSyntaxError(ValidationError):
    """PQL text that does not parse; ``line`` and ``column`` are 1-based.

    ``expected`` lists what would have been valid at that place ("a string", "'='"),
    empty when the problem is not a missing piece (a number out of range, say).
    """

    # PuppetDB's kind for a query it rejects (HTTP 400).
    kind = "puppetlabs.puppetdb.query/invalid"

    def __init__(
        self, query: str, position: int, reason: str, *, expected: Sequence[str] = ()
    ) -> None:
        self.query = query
        self.position = position
        self.reason = reason
        self.expected = list(expected)
        self.line, self.column, text = _locate(query, position)
        super().__init__(
            f"PQL parse error at line {self.line}, column {self.column}: {reason}\n"
            f"{_excerpt(text, self.column)}",
            details={
                "query": query,
                "line": self.line,
                "column": self.column,
                "expected": self.expected,
            },
        )


def _locate(query: str, position: int) -> tuple[int, int, str]:
    """The 1-based line and column of ``position`` in ``query``, and that line's text."""
    position = max(0, min(position, len(query)))
    start = query.rfind("\n", 0, position) + 1
    end = query.find("\n", position)
    text = query[start : end if end != -1 else len(query)]
    return query.count("\n", 0, position) + 1, position - start + 1, text.rstrip("\r")


def _excerpt(text: str, column: int) -> str:
    """The line, indented, and a caret under ``column``; a long line is cut around it."""
    offset = column - 1
    if len(text) > _EXCERPT_WIDTH:
        half = _EXCERPT_WIDTH // 2
        begin = max(0, min(offset - half, len(text) - _EXCERPT_WIDTH))
        window = text[begin : begin + _EXCERPT_WIDTH]
        prefix = "..." if begin > 0 else ""
        suffix = "..." if begin + _EXCERPT_WIDTH < len(text) else ""
        text, offset = prefix + window + suffix, offset - begin + len(prefix)
    shown = "".join(c if c == "\t" else " " if c.isprintable() else "?" for c in text)
    line = "".join(c if c.isprintable() or c == "\t" else "?" for c in text)
    return f"  {line}\n  {shown[:offset]}^"
