"""Reading PQL: cases/pql/*.json (a query and its AST, or a query and where it is wrong),
the error's shape, the limits, and a round trip from generated ASTs through PQL text."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.errors import ValidationError
from podium.inventory.pql import ENTITIES, MAX_DEPTH, MAX_QUERY_BYTES, PQLSyntaxError, parse_pql
from podium.inventory.pql import parser as pql_parser

CASES = sorted((Path(__file__).parent / "cases" / "pql").glob("*.json"))
DOC_PAGES = {
    "puppetdb docs: PQL reference guide (api/query/v4/pql)",
    "puppetdb docs: PQL tutorial (api/query/tutorial-pql)",
    "puppetdb docs: PQL examples (api/query/examples-pql)",
}


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def _json(value: Any) -> str:
    # JSON tells 1 from 1.0 and from true, which == does not.
    return json.dumps(value, ensure_ascii=False)


def _error(text: str, **limits: int) -> PQLSyntaxError:
    with pytest.raises(PQLSyntaxError) as info:
        parse_pql(text, **limits)
    return info.value


# The cases


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case_file_query_gives_its_ast_or_fails_at_its_place(path: Path) -> None:
    case = _load(path)
    if "ast" in case:
        assert _json(parse_pql(case["pql"])) == _json(case["ast"])
        return
    error = _error(case["pql"])
    for fragment in case["error"]:
        assert fragment in str(error)
    assert (error.line, error.column) == (case["line"], case["column"])


def test_there_are_enough_cases_with_every_documented_example_marked() -> None:
    cases = [_load(path) for path in CASES]
    assert len(cases) >= 80
    assert sum("error" in case for case in cases) >= 30
    documented = [case for case in cases if case.get("source", "").startswith("puppetdb docs:")]
    assert len(documented) >= 60
    assert {case["source"] for case in documented} == DOC_PAGES


def test_every_case_is_a_success_or_an_error_with_a_place() -> None:
    for path in CASES:
        case = _load(path)
        keys = set(case) - {"source", "note"}
        assert keys in ({"pql", "ast"}, {"pql", "error", "line", "column"}), path.name
        if "ast" in case:
            assert case["ast"][:2] == ["from", case["ast"][1]], path.name


# The error


def test_error_says_where_what_was_expected_and_draws_a_caret() -> None:
    error = _error('nodes { certname ~~ "web" }')
    assert str(error) == (
        "PQL parse error at line 1, column 19: expected a string after '~' but found '~'\n"
        '  nodes { certname ~~ "web" }\n'
        "                    ^"
    )
    assert (error.line, error.column, error.position) == (1, 19, 18)
    assert error.expected == ["a string"]
    assert error.query == 'nodes { certname ~~ "web" }'


def test_error_after_a_field_lists_every_operator_in_order() -> None:
    error = _error("nodes { certname certname }")
    assert error.expected == [
        "'='",
        "'!='",
        "'~'",
        "'!~'",
        "'~>'",
        "'<'",
        "'<='",
        "'>'",
        "'>='",
        "'in'",
        "'is'",
    ]
    assert "expected one of '=', '!=', '~', " in str(error)
    assert "after 'certname' but found 'certname'" in str(error)


def test_error_is_a_validation_error_in_puppetdbs_words() -> None:
    error = _error("nodes { certname = }")
    assert isinstance(error, ValidationError)
    assert isinstance(error, ValueError)
    assert error.status == 400
    assert error.kind == "puppetlabs.puppetdb.query/invalid"
    body = error.to_dict()
    assert body["kind"] == "puppetlabs.puppetdb.query/invalid"
    assert body["msg"].startswith("PQL parse error at line 1, column 20: expected one of a string")
    assert body["details"] == {
        "query": "nodes { certname = }",
        "line": 1,
        "column": 20,
        "expected": ["a string", "a number", "'true'", "'false'", "'['"],
    }


def test_error_on_a_later_line_shows_only_that_line() -> None:
    error = _error("nodes {\n  certname = 'a' and\n  report_timestamp <> 'x'\n}")
    assert (error.line, error.column) == (3, 21)
    assert "expected a string or a number after '<' but found '>'" in str(error)
    assert str(error).splitlines()[1:] == ["    report_timestamp <> 'x'", " " * 22 + "^"]


def test_error_caret_keeps_tabs_so_it_stays_under_the_spot() -> None:
    error = _error("nodes {\n\t\tcertname ? 'a' }")
    assert str(error).splitlines()[1:] == ["  \t\tcertname ? 'a' }", "  \t\t         ^"]


def test_error_in_a_long_line_shows_a_window_around_the_spot() -> None:
    filler = " or ".join(f"certname = 'node{i}'" for i in range(40))
    text = f"nodes {{ {filler} or certname ?= 'x' or {filler} }}"
    error = _error(text)
    excerpt, caret = str(error).splitlines()[1:]
    assert len(excerpt) <= 84
    assert excerpt.startswith("  ...") and excerpt.endswith("...")
    assert excerpt[caret.index("^")] == "?"
    assert error.column == text.index("?") + 1


def test_control_characters_do_not_reach_the_message() -> None:
    error = _error("nodes { certname \x00 = 'a' }")
    assert "found '\\x00'" in str(error)
    assert "\x00" not in str(error)


def test_unknown_entity_lists_the_entities() -> None:
    error = _error("hosts { certname = 'a' }")
    assert error.expected == [f"'{entity}'" for entity in ENTITIES]
    assert str(error).startswith("PQL parse error at line 1, column 1: unknown entity 'hosts'")


def test_not_is_not_pql_and_the_error_says_to_use_a_bang() -> None:
    assert parse_pql("nodes { !certname = 'a' }") == [
        "from",
        "nodes",
        ["not", ["=", "certname", "a"]],
    ]
    assert "PQL negates with '!'" in str(_error("nodes { not certname = 'a' }"))


# Limits


def test_query_over_the_byte_limit_is_refused_before_parsing() -> None:
    text = "nodes { certname = '" + "é" * (MAX_QUERY_BYTES // 2) + "' }"
    error = _error(text)
    assert (error.line, error.column) == (1, 1)
    assert f"more than the {MAX_QUERY_BYTES} allowed" in str(error)
    assert f"the query is {len(text.encode())} bytes long" in str(error)


def test_query_at_the_byte_limit_parses() -> None:
    head, tail = "nodes { certname = '", "' }"
    text = head + "a" * (MAX_QUERY_BYTES - len(head) - len(tail)) + tail
    assert len(text.encode()) == MAX_QUERY_BYTES
    assert parse_pql(text)[2][2] == "a" * (MAX_QUERY_BYTES - len(head) - len(tail))


def test_byte_limit_can_be_lowered() -> None:
    assert "more than the 10 allowed" in str(_error("nodes { a = 1 }", max_bytes=10))


def test_nesting_up_to_the_limit_parses() -> None:
    # The query counts as one level, so 99 negations make 100.
    ast = parse_pql("nodes { " + "!" * (MAX_DEPTH - 1) + "a = 1 }")
    inner = ast[2]
    for _ in range(MAX_DEPTH - 1):
        assert inner[0] == "not"
        inner = inner[1]
    assert inner == ["=", "a", 1]


def test_nesting_past_the_limit_is_an_error_at_the_first_level_too_deep() -> None:
    error = _error("nodes { " + "!" * MAX_DEPTH + "a = 1 }")
    assert f"nests more than {MAX_DEPTH} levels deep" in str(error)
    assert error.column == len("nodes { ") + MAX_DEPTH


@pytest.mark.parametrize(
    "text",
    [
        "nodes { " + "!" * 30000 + "a = 1 }",
        "nodes { " + "facts { " * 5000 + "}" * 5001,
        "nodes { a = " + "[" * 20000 + "1" + "]" * 20000 + " }",
        "nodes { " + "a = 1 and (" * 3000 + "b = 2" + ")" * 3000 + " }",
        "nodes { a in " + "nodes[a] { a in " * 2000 + "[1]" + " }" * 2001,
    ],
    ids=["bangs", "subqueries", "arrays", "groups", "in-subqueries"],
)
def test_deep_nesting_is_a_syntax_error_not_a_recursion_error(text: str) -> None:
    assert "levels deep" in str(_error(text))


def test_parentheses_alone_do_not_nest_the_ast() -> None:
    text = "nodes { " + "(" * 10000 + "a = 1" + ")" * 10000 + " }"
    assert parse_pql(text) == ["from", "nodes", ["=", "a", 1]]


def test_depth_limit_can_be_lowered() -> None:
    assert parse_pql("nodes { facts { a = 1 } }", max_depth=2)
    assert "nests more than 2 levels" in str(_error("nodes { !facts { a = 1 } }", max_depth=2))


def test_many_ors_become_one_flat_or() -> None:
    # PuppetDB's PDB-5643: a long chain of ors must not take long or nest.
    names = [f"web{i}" for i in range(500)]
    text = "nodes { (" + " or ".join(f"certname = '{n}'" for n in names) + ") }"
    assert parse_pql(text) == ["from", "nodes", ["or", *(["=", "certname", n] for n in names)]]


def test_a_query_that_is_not_a_string_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_pql(b"nodes {}")  # type: ignore[arg-type]


def test_a_lone_surrogate_is_refused() -> None:
    assert "not valid Unicode" in str(_error("nodes { certname = '\ud800' }"))
    assert "surrogate" in str(_error('nodes { certname = "\\udc00" }'))


# Entities, the grammar and the parser


def test_every_entity_can_be_queried() -> None:
    for entity in ENTITIES:
        assert parse_pql(f"{entity} {{}}") == ["from", entity]
        assert parse_pql(f"nodes {{ {entity} {{}} }}") == ["from", "nodes", ["subquery", entity]]


def test_the_grammar_names_the_same_entities_as_the_module() -> None:
    grammar = resources.files("podium.inventory.pql").joinpath("grammar.lark").read_text()
    (alternatives,) = re.findall(r"^ENTITY\.\d+: /\(\?:([a-z_|]+)\)", grammar, re.MULTILINE)
    assert sorted(alternatives.split("|")) == sorted(ENTITIES)


def test_the_lark_parser_is_built_once() -> None:
    assert pql_parser._lark() is pql_parser._lark()


def test_keywords_are_whole_words() -> None:
    text = "nodes { limitless = 1 and order_id = 2 and isnt = true and inside in [1] }"
    assert parse_pql(text) == [
        "from",
        "nodes",
        [
            "and",
            ["=", "limitless", 1],
            ["=", "order_id", 2],
            ["=", "isnt", True],
            ["in", "inside", ["array", [1]]],
        ],
    ]


# Round trip: an AST PQL can express, printed as PQL, reads back as the same AST

PLAIN_FIELDS = [
    "certname",
    "name",
    "value",
    "environment",
    "latest_report?",
    "report_timestamp",
    "type",
    "title",
    "status",
    "count",
    "resources",
    "facts",
    "node_2",
]
FUNCTIONS = ["count", "avg", "sum", "min", "max"]
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)

_segments = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
    st.from_regex(r"[a-z]{1,4}\[[0-9]{1,2}\]", fullmatch=True),
    st.text(
        st.characters(blacklist_characters='"\n\r', blacklist_categories=["Cs"]), max_size=6
    ).map(lambda text: f'"{text}"'),
    st.sampled_from(["*", "/boot", "κόσμε", 'match("sd.*")', "1"]),
)
_dotted = st.builds(
    lambda prefix, segments: ".".join([prefix, *segments]),
    st.sampled_from(["facts", "trusted", "parameters"]),
    st.lists(_segments, min_size=1, max_size=3),
)
fields = st.one_of(st.sampled_from(PLAIN_FIELDS), _dotted)
strings = st.text(max_size=12)
literals = st.recursive(
    st.one_of(strings, INT64, FLOATS, st.booleans()),
    lambda inner: st.lists(inner, min_size=1, max_size=3),
    max_leaves=6,
)
functions = st.one_of(
    st.just(["function", "count"]),
    st.builds(lambda name, field: ["function", name, field], st.sampled_from(FUNCTIONS), fields),
    st.builds(
        lambda field, formats: ["function", "to_string", field, *formats],
        fields,
        st.lists(strings, min_size=1, max_size=2),
    ),
)
selections = st.one_of(fields, functions)


def _flat(operator: str, operands: list[Any]) -> list[Any]:
    """An and/or as PQL can write it: an operand of the same operator merges in."""
    merged: list[Any] = []
    for operand in operands:
        merged.extend(operand[1:] if operand[0] == operator else [operand])
    return [operator, *merged]


_conditions = st.one_of(
    st.builds(lambda f, v: ["=", f, v], fields, literals),
    st.builds(lambda f, v: ["not", ["=", f, v]], fields, literals),
    st.builds(lambda f, v: ["~", f, v], fields, strings),
    st.builds(lambda f, v: ["not", ["~", f, v]], fields, literals),
    st.builds(lambda f, v: ["~>", f, v], fields, st.lists(strings, min_size=1, max_size=3)),
    st.builds(
        lambda op, f, v: [op, f, v],
        st.sampled_from(["<", "<=", ">", ">="]),
        fields,
        st.one_of(INT64, FLOATS, strings),
    ),
    st.builds(
        lambda f, values: ["in", f, ["array", values]],
        st.one_of(fields, st.lists(fields, min_size=1, max_size=3)),
        st.lists(literals, min_size=1, max_size=3),
    ),
    st.builds(lambda f, null: ["null?", f, null], fields, st.booleans()),
    st.builds(lambda entity: ["subquery", entity], st.sampled_from(ENTITIES)),
)


def _queries(
    filters: st.SearchStrategy[Any], *, projected: bool = False
) -> st.SearchStrategy[list[Any]]:
    """Whole queries around ``filters``, laid out as PuppetDB lays them out."""
    paging = st.lists(
        st.one_of(
            st.builds(lambda n: ["limit", n], st.integers(1, 10**6)),
            st.builds(lambda n: ["offset", n], st.integers(0, 10**6)),
            st.builds(
                lambda params: ["order_by", params],
                st.lists(
                    st.one_of(
                        st.sampled_from(PLAIN_FIELDS),
                        st.builds(list, st.tuples(fields, st.sampled_from(["asc", "desc"]))),
                    ),
                    min_size=1,
                    max_size=3,
                ),
            ),
        ),
        max_size=3,
        unique_by=lambda clause: str(clause[0]),
    )
    modifiers = st.one_of(
        paging,
        st.builds(
            lambda items: [["group_by", *items]], st.lists(selections, min_size=1, max_size=3)
        ),
    )

    def layout(
        entity: str, projection: list[Any] | None, filter_: Any, clauses: list[Any]
    ) -> list[Any]:
        grouped = [c for c in clauses if c[0] == "group_by"]
        pages = [c for c in clauses if c[0] != "group_by"]
        inner = [filter_] if filter_ is not None else []
        if projection is not None:
            return ["from", entity, ["extract", projection, *inner, *grouped], *pages]
        return ["from", entity, *inner, *grouped, *pages]

    return st.builds(
        layout,
        st.sampled_from(ENTITIES),
        st.lists(selections, max_size=3) if projected else st.none() | st.lists(selections),
        st.one_of(st.none(), filters),
        modifiers,
    )


def _extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda x: ["not", x], inner),
        st.builds(_flat, st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda entity, x: ["subquery", entity, x], st.sampled_from(ENTITIES), inner),
        st.builds(
            lambda lhs, query: ["in", lhs, query],
            st.one_of(fields, st.lists(fields, min_size=1, max_size=2)),
            _queries(inner, projected=True),
        ),
    )


filters = st.recursive(_conditions, _extend, max_leaves=8)
queries = _queries(filters)


def print_query(ast: list[Any]) -> str:
    """PQL text for a ``["from", ...]`` AST."""
    _, entity, *clauses = ast
    projection: list[Any] | None = None
    body: list[str] = []
    trailing: list[str] = []
    for clause in clauses:
        if clause[0] == "extract":
            projection = clause[1]
            body.extend(_print_clause(inner) for inner in clause[2:])
        elif clause[0] in ("limit", "offset", "order_by"):
            trailing.append(_print_clause(clause))
        else:
            body.append(_print_clause(clause))
    head = entity if projection is None else f"{entity}[{_print_list(projection)}]"
    return f"{head} {{ {' '.join(body + trailing)} }}"


def _print_clause(clause: list[Any]) -> str:
    if clause[0] == "group_by":
        return "group by " + _print_list(clause[1:])
    if clause[0] in ("limit", "offset"):
        return f"{clause[0]} {clause[1]}"
    if clause[0] == "order_by":
        params = [p if isinstance(p, str) else f"{p[0]} {p[1]}" for p in clause[1]]
        return "order by " + ", ".join(params)
    return _print_filter(clause)


def _print_list(items: list[Any]) -> str:
    return ", ".join(_print_selection(item) for item in items)


def _print_selection(item: Any) -> str:
    if isinstance(item, str):
        return item
    _, name, *args = item
    if not args:
        return f"{name}()"
    # A space after a dotted field: a path segment may hold ')'.
    return f"{name}({', '.join([f'{args[0]} ', *map(_print_literal, args[1:])])})"


def _print_filter(node: list[Any]) -> str:
    operator = node[0]
    if operator in ("and", "or"):
        # An or inside an and needs parentheses; an and inside an or does not.
        parts = [
            f"({_print_filter(child)})"
            if (operator, child[0]) == ("and", "or")
            else _print_filter(child)
            for child in node[1:]
        ]
        return f" {operator} ".join(parts)
    if operator == "not":
        child = node[1]
        if child[0] == "=":
            return f"{child[1]} != {_print_literal(child[2])}"
        if child[0] == "~":
            return f"{child[1]} !~ {_print_literal(child[2])}"
        if child[0] in ("and", "or"):
            return f"!({_print_filter(child)})"
        return f"!{_print_filter(child)}"
    if operator == "null?":
        return f"{node[1]} is {'null' if node[2] else 'not null'}"
    if operator == "subquery":
        inside = f" {_print_filter(node[2])} " if len(node) > 2 else ""
        return f"{node[1]} {{{inside}}}"
    if operator == "in":
        lhs = node[1] if isinstance(node[1], str) else f"[{', '.join(node[1])}]"
        rhs = node[2]
        values = rhs[1] if rhs[0] == "array" else None
        printed = print_query(rhs) if values is None else _print_literal(values)
        return f"{lhs} in {printed}"
    if operator == "~>":
        return f"{node[1]} ~> {_print_literal(node[2])}"
    return f"{node[1]} {operator} {_print_literal(node[2])}"


def _print_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        # PQL wants digits on both sides of the point, E notation or not.
        return text if "." in mantissa else f"{mantissa}.0{e}{exponent}"
    if isinstance(value, list):
        return "[" + ", ".join(_print_literal(item) for item in value) + "]"
    if '"' in value and "\\" not in value:
        return "'" + value.replace("'", "\\'") + "'"
    return json.dumps(value, ensure_ascii=False)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(queries)
def test_a_printed_ast_reads_back_as_the_same_ast(ast: list[Any]) -> None:
    text = print_query(ast)
    assert _json(parse_pql(text)) == _json(ast), text
