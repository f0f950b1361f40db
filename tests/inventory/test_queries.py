"""PuppetDB's AST over the inventory, on SQLite and PostgreSQL alike.

Each file of ``cases/queries`` is one query against the fleet of ``dataset.py``:
``{"description", "entity" (null for a whole ["from", ...] query), "query",
"limit"/"offset"/"order_by" (the URL parameters), "expected": [rows] or "error":
"<words of the 400's message>", "source": <where PuppetDB documents it>}``. Rows are
compared in order: every answer is ordered, by the entity's fields when the query asks
for no order. The cases marked with a ``source`` are the examples of PuppetDB's AST
documentation page (with this fleet's names where they name facts it lacks).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import BACKENDS
from inventory import dataset
from podium.inventory.facts import flatten
from podium.inventory.query import QueryError, run_query
from podium.inventory.store import InventoryStore
from podium.store import Store

CASES = Path(__file__).parent / "cases" / "queries"
CASE_FILES = sorted(CASES.glob("*.json"))


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """The data set, stored once per module and backend (the queries only read)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fleet') / 'podium.db'}"
        supply = None
    else:
        supply = request.getfixturevalue("postgres_databases")
        url = supply.take()
    store = Store(url)
    store.migrate()
    dataset.load(InventoryStore.of(store))
    yield store
    store.close()
    if supply is not None:
        supply.give_back(url)


def run_case(store: Store, case: dict[str, Any]) -> list[dict[str, Any]]:
    paging = {k: case[k] for k in ("limit", "offset", "order_by") if k in case}
    if case["entity"] is None:
        rows, _ = run_query(store, case["query"], **paging)
    else:
        rows, _ = run_query(store, case["entity"], query=case["query"], **paging)
    return rows


def test_there_are_cases_for_every_example_of_the_ast_page_and_more() -> None:
    cases = [json.loads(p.read_text()) for p in CASE_FILES]
    assert len(cases) >= 80
    assert sum(1 for c in cases if "ast.html" in c.get("source", "")) >= 40
    entities = {c["entity"] for c in cases}
    assert {"nodes", "facts", "fact_contents", "fact_paths", "fact_names"} <= entities
    assert {"factsets", "inventory", "environments", None} <= entities


@pytest.mark.parametrize("path", CASE_FILES, ids=[p.stem for p in CASE_FILES])
def test_query_case(fleet: Store, path: Path) -> None:
    case = json.loads(path.read_text())
    if "error" in case:
        with pytest.raises(QueryError) as caught:
            run_case(fleet, case)
        assert case["error"] in caught.value.msg
        assert caught.value.status == 400
        return
    assert run_case(fleet, case) == case["expected"], case["description"]


def test_raw_rows_serialise_to_the_same_json(fleet: Store) -> None:
    query = ["from", "inventory", ["=", "certname", "lb02.fra.example.com"]]
    parsed, _ = run_query(fleet, query)
    raw, _ = run_query(fleet, query, raw=True)
    assert orjson.loads(orjson.dumps(raw)) == parsed
    assert parsed[0]["facts"] == dataset.documents()["lb02.fra.example.com"]


def test_include_total_counts_rows_past_the_limit(fleet: Store) -> None:
    rows, total = run_query(
        fleet, "nodes", query=["~", "certname", "^web"], limit=2, include_total=True
    )
    assert [r["certname"] for r in rows] == ["web01.ams.example.com", "web02.ams.example.com"]
    assert total == 6


def test_paging_given_in_the_query_and_as_a_parameter_is_refused(fleet: Store) -> None:
    with pytest.raises(QueryError, match="limit is given twice"):
        run_query(fleet, ["from", "nodes", ["limit", 2]], limit=3)


# Random equality queries against a brute-force filter over the same documents.

_DOCS = dataset.documents()
_ACTIVE = set(dataset.active())
_LEAVES = sorted(
    {
        (leaf.path, orjson.dumps(leaf.value).decode())
        for doc in _DOCS.values()
        for leaf in flatten(doc)
        if leaf.value is not None or leaf.type.name == "NULL"
        if not isinstance(leaf.value, dict | list)
    }
)


def _dotted(path: tuple[str | int, ...]) -> str:
    text = "facts"
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif "." in part or " " in part:
            text += f'."{part}"'
        else:
            text += f".{part}"
    return text


def _at(doc: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(doc, list) or part >= len(doc):
                return _MISSING
        elif not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


@st.composite
def _equality(draw: st.DrawFn) -> tuple[tuple[str | int, ...], Any]:
    path, value = draw(st.sampled_from(_LEAVES))
    value = orjson.loads(value)
    if draw(st.booleans()):  # sometimes a value no node has, or the same as text
        value = draw(st.sampled_from([str(value), 12345, "nope", True, -1.5]))
    return path, value


@settings(max_examples=60)
@given(_equality())
def test_random_equalities_agree_with_a_filter_over_the_documents(
    fleet: Store, equality: tuple[tuple[str | int, ...], Any]
) -> None:
    path, value = equality
    if value is None:
        query = ["null?", _dotted(path), False]
        want = {c for c, d in _DOCS.items() if _at(d, path) is not _MISSING}
    else:
        query = ["=", _dotted(path), value]
        want = {c for c, d in _DOCS.items() if _same(_at(d, path), value)}
    rows, _ = run_query(fleet, ["from", "inventory", ["extract", "certname", query]])
    assert {r["certname"] for r in rows} == want & _ACTIVE
    if value is not None:
        contents, _ = run_query(
            fleet,
            "fact_contents",
            query=[
                "extract",
                "certname",
                ["and", ["=", "path", list(path)], ["=", "value", value]],
            ],
        )
        assert {r["certname"] for r in contents} == want & _ACTIVE
