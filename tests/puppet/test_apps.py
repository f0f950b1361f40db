"""Application definitions: what a file may say, what is refused and how, and the run
order computed from them (one case a file in ``cases/apps``), with properties."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from podium.errors import NotFound, ValidationError
from podium.puppet.apps import (
    DEPENDENCY_CYCLE,
    Application,
    applications_of,
    levels,
    load_applications,
    parse_application,
    run_order,
)
from podium.tasks.codedir import CodeDir

CASES = sorted((Path(__file__).parent / "cases" / "apps").glob("*.yaml"))

SHOP = """\
description: The web shop
components:
  db:
    nodes: [db-1.example.com]
    produces: [Sql]
  web:
    nodes: [web-1.example.com, web-2.example.com]
    consumes: [Sql]
    produces: [Http]
  lb:
    nodes: [lb-1.example.com]
    consumes: [Http]
"""


def test_a_file_gives_the_instance_its_components_and_what_each_runs_after() -> None:
    shop = parse_application("shop", SHOP, source="applications/shop.yaml")
    assert shop.name == "shop"
    assert shop.description == "The web shop"
    assert [c.name for c in shop.components] == ["db", "web", "lb"]
    assert shop.component("web").nodes == ("web-1.example.com", "web-2.example.com")
    assert shop.component("web").consumes == ("Sql",)
    assert shop.after == {"db": (), "web": ("db",), "lb": ("web",)}


def test_a_consumer_runs_after_every_producer_of_what_it_consumes() -> None:
    text = """\
components:
  primary: {nodes: [db-1], produces: [Sql]}
  replica: {nodes: [db-2], produces: [Sql]}
  cache: {nodes: [cache-1], produces: [Cache]}
  web: {nodes: [web-1], consumes: [Sql, Cache]}
"""
    app = parse_application("shop", text)
    assert app.after["web"] == ("primary", "replica", "cache")
    order = run_order([app], ["web-1", "db-1", "db-2", "cache-1"])
    assert order.after["web-1"] == ("db-1", "db-2", "cache-1")
    assert order.levels == [["db-1", "db-2", "cache-1"], ["web-1"]]


def test_names_stay_strings_as_written_even_when_they_look_like_dates() -> None:
    app = parse_application("x", "components:\n  a: {nodes: [2026-01-01]}\n")
    assert app.components[0].nodes == ("2026-01-01",)


def test_roles_say_which_components_a_node_is_of() -> None:
    text = "components:\n  db: {nodes: [small], produces: [Sql]}\n  web: {nodes: [small]}\n"
    order = run_order([parse_application("blog", text)], ["small", "other"])
    assert order.roles == {"small": (("blog", "db"), ("blog", "web"))}
    assert order.after == {"small": (), "other": ()}


# Each: the file's text, the key the error names, and words of its message.
REFUSED = [
    ("[a, b]", "", "it must be a mapping with a 'components' key"),
    ("components: {}", "components", "give a mapping of component name"),
    ("description: 3\ncomponents: {a: {nodes: [n]}}", "description", "it must be a string"),
    ("components: {a: {nodes: [n]}}\nversion: 2", "version", "unknown key; the keys here are"),
    ("components: {a: {nodes: [n], produce: [X]}}", "components.a.produce", "unknown key"),
    ("components: {A: {nodes: [n]}}", "components.A", "is no component name"),
    ("components: {a: [n]}", "components.a", "it must be a mapping with 'nodes'"),
    ("components: {a: {produces: [X]}}", "components.a.nodes", "needs a list of nodes"),
    ("components: {a: {nodes: []}}", "components.a.nodes", "give at least one node"),
    ("components: {a: {nodes: n1}}", "components.a.nodes", "it must be a list of certnames"),
    ("components: {a: {nodes: [n1, N2]}}", "components.a.nodes[1]", "is not a certname"),
    ("components: {a: {nodes: [12]}}", "components.a.nodes[0]", "quote it"),
    ("components: {a: {nodes: [n, n]}}", "components.a.nodes[1]", "n is listed twice"),
    ("components: {a: {nodes: [n], produces: [sql]}}", "components.a.produces[0]", "Mysql::Db"),
    (
        "components: {a: {nodes: [n], consumes: [Sql]}, b: {nodes: [m], produces: [Http]}}",
        "components.a.consumes",
        "no component of shop produces Sql (they produce: Http)",
    ),
    (
        "components: {a: {nodes: [n], produces: [Sql], consumes: [Sql]}}",
        "components.a.consumes",
        "a consumes Sql, which it produces itself",
    ),
    ("components: {a: {nodes: [n]}, a: {nodes: [m]}}", "", "the key 'a' is given twice (line 1"),
    ("components: [1", "", "it is not valid YAML"),
    ("components: !!python/object:os.system {}", "", "it is not valid YAML"),
]


@pytest.mark.parametrize(("text", "key", "words"), REFUSED)
def test_a_file_is_checked_strictly_and_errors_name_the_file_and_the_key(
    text: str, key: str, words: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_application("shop", text, source="envs/production/applications/shop.yaml")
    error = raised.value
    assert error.msg.startswith("envs/production/applications/shop.yaml:")
    assert words in error.msg
    assert error.details == {"file": "envs/production/applications/shop.yaml", "key": key}
    if key:
        assert f"key '{key}'" in error.msg


def test_a_bad_file_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="is no application name"):
        parse_application("Shop", SHOP, source="applications/Shop.yaml")


def test_a_cycle_of_components_names_them_their_capabilities_and_nodes() -> None:
    text = """\
components:
  web: {nodes: [web-1], consumes: [Sql], produces: [Http]}
  db: {nodes: [db-1, db-2], consumes: [Http], produces: [Sql]}
"""
    with pytest.raises(ValidationError) as raised:
        parse_application("shop", text, source="shop.yaml")
    error = raised.value
    assert error.kind == DEPENDENCY_CYCLE
    assert error.msg == (
        "shop.yaml: the components of shop form a dependency cycle: web runs after db "
        "(web consumes Sql), db runs after web (db consumes Http); nodes of web: web-1; "
        "db: db-1, db-2. Remove one of these consumes"
    )
    assert error.details["cycle"] == ["web", "db", "web"]


def test_a_node_both_before_and_after_another_is_a_cycle_of_nodes() -> None:
    text = """\
components:
  db: {nodes: [n1], produces: [Sql]}
  web: {nodes: [n2], consumes: [Sql], produces: [Http]}
  lb: {nodes: [n1], consumes: [Http]}
"""
    with pytest.raises(ValidationError) as raised:
        parse_application("shop", text, source="shop.yaml")
    error = raised.value
    assert error.kind == DEPENDENCY_CYCLE
    assert "n2 runs after n1 (shop: web runs after db)" in error.msg
    assert "n1 runs after n2 (shop: lb runs after web)" in error.msg
    assert "move it to one component" in error.msg


# -- reading -------------------------------------------------------------------------------


def test_the_loader_reads_the_yaml_files_of_applications_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "applications"
    folder.mkdir()
    (folder / "shop.yaml").write_text(SHOP)
    (folder / "blog.yaml").write_text("components:\n  all: {nodes: [blog-1]}\n")
    (folder / "README.md").write_text("not an application")
    (folder / ".shop.yaml.swp").write_text("\0")
    apps = load_applications(tmp_path)
    assert [a.name for a in apps] == ["blog", "shop"]
    assert apps[1].source == str(folder / "shop.yaml")
    assert load_applications(tmp_path / "elsewhere") == []


def test_the_loader_names_a_file_that_is_not_utf8_or_too_large(tmp_path: Path) -> None:
    folder = tmp_path / "applications"
    folder.mkdir()
    (folder / "shop.yaml").write_bytes(b"components: \xff\n")
    with pytest.raises(ValidationError, match=r"shop\.yaml: the file is not UTF-8"):
        load_applications(tmp_path)
    (folder / "shop.yaml").write_text("#" * (1024 * 1024 + 1))
    with pytest.raises(ValidationError, match="larger than 1024 KiB"):
        load_applications(tmp_path)


def test_applications_of_an_environment_of_the_code_dir(tmp_path: Path) -> None:
    env = tmp_path / "environments" / "production"
    (env / "applications").mkdir(parents=True)
    (env / "applications" / "shop.yaml").write_text(SHOP)
    codedir = CodeDir(tmp_path, builtin=None)
    assert [a.name for a in applications_of(codedir, "production")] == ["shop"]
    with pytest.raises(NotFound, match="unknown environment 'staging'"):
        applications_of(codedir, "staging")
    with pytest.raises(NotFound):
        applications_of(codedir, "../production")


# -- run order, one case a file ---------------------------------------------------------------


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_run_order_case(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    apps = [
        parse_application(name, text, source=f"{name}.yaml")
        for name, text in case["applications"].items()
    ]
    if "error" in case:
        with pytest.raises(ValidationError) as raised:
            run_order(apps, case["targets"])
        assert raised.value.kind == case["error"]["kind"]
        for words in case["error"]["message"]:
            assert words in raised.value.msg
        return
    order = run_order(apps, case["targets"])
    assert order.levels == case["levels"], case["about"]
    assert {n: list(a) for n, a in order.after.items()} == case["after"], case["about"]


def test_levels_refuse_a_cycle_naming_it() -> None:
    with pytest.raises(ValidationError) as raised:
        levels({"a": ["b"], "b": ["a"], "c": []}, ["a", "b", "c"])
    assert raised.value.kind == DEPENDENCY_CYCLE
    assert "a runs after b runs after a" in raised.value.msg


def test_a_long_chain_is_ordered_without_recursion() -> None:
    count = 3000
    parts = [f"  c{i}: {{nodes: [n{i}], produces: [C{i}]" for i in range(count)]
    text = "components:\n" + "\n".join(
        p + (f", consumes: [C{i - 1}]}}" if i else "}") for i, p in enumerate(parts)
    )
    app = parse_application("chain", text)
    order = run_order([app], [f"n{i}" for i in range(count)])
    assert len(order.levels) == count
    assert order.levels[-1] == [f"n{count - 1}"]


# -- properties ------------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, set[tuple[int, int]]]:
    """A number of components and edges (later, earlier) with earlier < later."""
    count = draw(st.integers(1, 8))
    pairs = draw(st.sets(st.tuples(st.integers(0, count - 1), st.integers(0, count - 1))))
    return count, {(a, b) for a, b in pairs if b < a}


def application_text(count: int, edges: set[tuple[int, int]]) -> str:
    """Component i on node n<i>, producing C<i>, consuming C<j> for each edge (i, j)."""
    lines = ["components:"]
    for i in range(count):
        consumes = sorted(f"C{j}" for a, j in edges if a == i)
        lines.append(f"  c{i}:")
        lines.append(f"    nodes: [n{i}]")
        lines.append(f"    produces: [C{i}]")
        if consumes:
            lines.append(f"    consumes: [{', '.join(consumes)}]")
    return "\n".join(lines) + "\n"


def reachable(
    edges: set[tuple[int, int]], start: int, *, through: set[int] | None = None
) -> set[int]:
    """Every component ``start`` runs after, directly or not (only ``through`` these)."""
    found: set[int] = set()
    todo = [start]
    while todo:
        at = todo.pop()
        for a, b in edges:
            if a == at and b not in found:
                found.add(b)
                if through is None or b in through:
                    todo.append(b)
    return found


@settings(max_examples=300)
@given(dag=dags(), targeted=st.sets(st.integers(0, 7)), data=st.data())
def test_a_random_dag_never_reports_a_cycle_and_its_levels_respect_every_edge(
    dag: tuple[int, set[tuple[int, int]]], targeted: set[int], data: st.DataObject
) -> None:
    count, edges = dag
    app = parse_application("app", application_text(count, edges))
    targets = data.draw(st.permutations([f"n{i}" for i in sorted(targeted) if i < count]))
    order = run_order([app], targets)
    level = {n: i for i, nodes in enumerate(order.levels) for n in nodes}
    assert sorted(level) == sorted(targets)  # every target once
    for node, before in order.after.items():
        for earlier in before:
            assert level[node] > level[earlier]
        # level n + 1 waits for some node of level n: no level is left empty or skipped
        assert level[node] == (1 + max(level[e] for e in before) if before else 0)
    # A node runs after every targeted node it depends on, directly or not; it waits for
    # the nearest: those reached through nodes that are not targeted.
    chosen = {int(n[1:]) for n in targets}
    for node in targets:
        i = int(node[1:])
        for j in reachable(edges, i) & chosen:
            assert level[node] > level[f"n{j}"]
        nearest = reachable(edges, i, through=set(range(count)) - chosen) & chosen
        assert set(order.after[node]) == {f"n{j}" for j in nearest}


@settings(max_examples=300)
@given(dag=dags(), data=st.data())
def test_adding_a_back_edge_always_makes_a_dependency_cycle(
    dag: tuple[int, set[tuple[int, int]]], data: st.DataObject
) -> None:
    count, edges = dag
    later = [(a, b) for a in range(count) for b in reachable(edges, a)]
    if not later:
        later = [(0, 0)]  # a component consuming what it produces itself
    a, b = data.draw(st.sampled_from(later))
    # b (which a runs after, directly or not) now consumes what a produces
    with pytest.raises(ValidationError) as raised:
        parse_application("app", application_text(count, {*edges, (b, a)}))
    if a != b:
        assert raised.value.kind == DEPENDENCY_CYCLE
        cycle = raised.value.details["cycle"]
        assert cycle[0] == cycle[-1] and len(cycle) >= 3
    # and the same back edge between nodes is refused by levels too
    after: dict[str, list[str]] = {}
    for x, y in {*edges, (b, a)}:
        after.setdefault(f"n{x}", []).append(f"n{y}")
    names = [f"n{i}" for i in range(count)]
    if a != b:
        with pytest.raises(ValidationError) as refused:
            levels(after, names)
        assert refused.value.kind == DEPENDENCY_CYCLE


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=25,
)


def _shaped(value: Any) -> Any:
    """Random values in the places of a real file, so the checks deep inside are reached."""
    return {"components": {"a": {"nodes": value}, "b": value}, "description": "x"}


@settings(max_examples=400)
@given(value=YAMLISH | YAMLISH.map(_shaped))
def test_any_document_parses_or_fails_with_a_validation_error(value: Any) -> None:
    text = yaml.safe_dump(value)
    try:
        app = parse_application("fuzz", text)
    except ValidationError as exc:
        assert exc.msg.startswith("application fuzz:")
    else:
        assert isinstance(app, Application)


@settings(max_examples=400)
@given(text=st.text(max_size=200))
def test_any_text_parses_or_fails_with_a_validation_error(text: str) -> None:
    with contextlib.suppress(ValidationError):
        parse_application("fuzz", text)
