"""Fuzzing the PQL parser: any text, and the case queries broken in small ways, either
parse to an AST or raise a PQLSyntaxError that points inside the text; nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.inventory.pql import PQLSyntaxError, parse_pql

CASES = sorted((Path(__file__).parent / "cases" / "pql").glob("*.json"))
QUERIES = [json.loads(path.read_text(encoding="utf-8"))["pql"] for path in CASES]

FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])

# Pieces of PQL, so that insertions often make something close to valid.
PIECES = [
    *"{}[]()!=~<>,.'\"-?*\\# \n\t",
    "!=",
    "!~",
    "~>",
    ">=",
    " and ",
    " or ",
    " in ",
    " is null",
    " is not null",
    " limit 1",
    " offset 2",
    " order by certname desc",
    " group by name",
    "nodes",
    "facts",
    "facts.os.",
    "count(",
    "true",
    "null",
    "1.5E3",
    "-7",
    "99999999999999999999",
    '"\\u12"',
    "'",
]
_insertions = st.one_of(st.sampled_from(PIECES), st.text(max_size=4))


@st.composite
def mutated_queries(draw: st.DrawFn) -> str:
    """A case query with a few deletions, insertions, replacements or repeats."""
    text: str = draw(st.sampled_from(QUERIES))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        start = draw(st.integers(min_value=0, max_value=len(text)))
        end = draw(st.integers(min_value=start, max_value=min(len(text), start + 8)))
        action = draw(st.sampled_from(["delete", "insert", "replace", "repeat"]))
        if action == "delete":
            text = text[:start] + text[end:]
        elif action == "insert":
            text = text[:start] + draw(_insertions) + text[start:]
        elif action == "replace":
            text = text[:start] + draw(_insertions) + text[end:]
        else:
            text = text[:end] + text[start:end] * draw(st.integers(1, 50)) + text[end:]
    return text


def _parses_or_fails_cleanly(text: str) -> None:
    try:
        ast = parse_pql(text)
    except PQLSyntaxError as error:
        lines = text.split("\n")
        assert 1 <= error.line <= len(lines)
        assert 1 <= error.column <= len(lines[error.line - 1]) + 1
        assert error.query == text
        assert str(error).startswith(
            f"PQL parse error at line {error.line}, column {error.column}: "
        )
        assert str(error).splitlines()[-1].endswith("^")
        json.dumps(error.to_dict())
        return
    assert ast[0] == "from"
    json.dumps(ast, allow_nan=False)


@FUZZ
@given(st.text())
def test_any_text_parses_or_fails_with_a_place(text: str) -> None:
    _parses_or_fails_cleanly(text)


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_pql_looking_text_parses_or_fails_with_a_place(text: str) -> None:
    _parses_or_fails_cleanly(text)


@FUZZ
@given(mutated_queries())
def test_broken_case_queries_parse_or_fail_with_a_place(text: str) -> None:
    _parses_or_fails_cleanly(text)


@FUZZ
@given(st.sampled_from(QUERIES), st.integers(min_value=0, max_value=10_000))
def test_every_prefix_of_a_case_query_parses_or_fails_with_a_place(text: str, cut: int) -> None:
    _parses_or_fails_cleanly(text[: cut % (len(text) + 1)])
