"""The inventory's storage: documents and their leaves, batches, staleness, deactivation."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select

from conftest import BACKENDS
from podium.errors import ValidationError
from podium.inventory import facts as F
from podium.inventory.query import run_query
from podium.inventory.store import INCORPORATED, STALE, FactsCommand, InventoryStore
from podium.store import Store
from podium.store.tables import fact_leaves, fact_paths, factsets, nodes

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# JSON documents: what a fact set can hold (text without NUL, which PostgreSQL refuses,
# and without lone surrogates, which are not UTF-8).
_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_TEXT, max_size=12)
)
_keys = st.text(_TEXT, min_size=1, max_size=8)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(_keys, _values, max_size=6)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def command(
    certname: str, values: dict[str, Any], seconds: int, env: str = "production"
) -> FactsCommand:
    return FactsCommand(certname, values, env, at(seconds), "puppet", received=at(seconds + 1))


def stored_rows(inventory: InventoryStore, certname: str) -> dict[F.Path, tuple[Any, ...]]:
    """A node's leaves as the database holds them: path → (type, s, n)."""
    query = (
        select(fact_paths.c.path, fact_paths.c.type, fact_leaves.c.s, fact_leaves.c.n)
        .select_from(fact_leaves.join(fact_paths, fact_paths.c.id == fact_leaves.c.path_id))
        .join(factsets, factsets.c.id == fact_leaves.c.factset_id)
        .where(factsets.c.certname == certname)
    )
    with inventory.read() as connection:
        return {
            F.decode_path(path): (F.FactType(kind), s, n)
            for path, kind, s, n in connection.execute(query)
        }


@pytest.fixture
def inventory(store: Store) -> InventoryStore:
    return InventoryStore.of(store)


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InventoryStore]:
    """One database per backend for the property tests, which add nodes of their own."""
    supply = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('props') / 'podium.db'}"
    else:
        supply = request.getfixturevalue("postgres_databases")
        url = supply.take()
    store = Store(url)
    store.migrate()
    yield InventoryStore.of(store)
    store.close()
    if supply is not None:
        supply.give_back(url)


# Pure: flattening


@given(documents)
def test_a_document_flattens_and_inflates_unchanged(values: dict[str, Any]) -> None:
    assert F.inflate(F.flatten(values)) == values


@given(documents)
def test_stored_columns_give_every_scalar_back_exactly(values: dict[str, Any]) -> None:
    for leaf in F.flatten(values):
        if leaf.type in F.SCALARS:
            back = F.value_of(leaf.type, *F.columns(leaf.type, leaf.value))
            assert back == leaf.value and type(back) is type(leaf.value)


@given(st.lists(documents, min_size=1, max_size=4))
def test_the_path_trie_encodes_what_rows_says(docs: list[dict[str, Any]]) -> None:
    trie = F.PathTrie()
    ids: dict[tuple[F.Path, F.FactType], int] = {}
    for factset, values in enumerate(docs, 1):
        encoded, misses = trie.encode(values, factset)
        for index, node, kind in misses:
            path_id = ids.setdefault((F.PathTrie.path(node), kind), len(ids) + 1)
            F.PathTrie.assign(node, kind, path_id)
            encoded[index] = (path_id, *encoded[index][1:])
        by_id = {v: k for k, v in ids.items()}
        got = {by_id[r[0]][0]: (by_id[r[0]][1], r[2], r[3]) for r in encoded}
        assert got == F.rows(values)
        assert all(r[1] == factset for r in encoded)


@given(documents, documents)
def test_a_diff_turns_one_documents_rows_into_the_others(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    old, new = F.rows(a), F.rows(b)
    changes = F.diff(old, new)
    result = {p: r for p, r in old.items() if p not in changes.removed}
    result.update(changes.changed)
    result.update(changes.added)
    assert result == new
    assert not F.diff(new, new)


def test_a_nul_character_is_refused_on_every_database(inventory: InventoryStore) -> None:
    with pytest.raises(ValidationError, match="NUL"):
        inventory.replace_facts_many([command("a.example.com", {"x": "a\x00b"}, 0)])


def test_too_deep_or_not_json_documents_are_refused() -> None:
    deep: Any = "x"
    for _ in range(F.MAX_DEPTH + 1):
        deep = {"k": deep}
    with pytest.raises(ValidationError, match="deeper than"):
        F.flatten({"deep": deep})
    with pytest.raises(ValidationError, match="JSON"):
        F.flatten({"x": {1, 2}})
    with pytest.raises(ValidationError, match="JSON object"):
        F.flatten([1])  # type: ignore[arg-type]


# The store, on both databases


_names = itertools.count()


@settings(max_examples=25)
@given(st.lists(documents, min_size=1, max_size=3))
def test_stored_leaves_follow_every_document_a_node_is_given(
    shared: InventoryStore, docs: list[dict[str, Any]]
) -> None:
    certname = f"prop-{next(_names)}.example.com"
    for seconds, values in enumerate(docs):
        assert shared.replace_facts_many([command(certname, values, seconds)]) == [INCORPORATED]
        assert stored_rows(shared, certname) == F.rows(values)
    rows, _ = run_query(shared.store, ["from", "inventory", ["=", "certname", certname]])
    # PostgreSQL's jsonb keeps a number's value, not its notation (7e16 is 70000000000000000).
    assert as_floats(rows[0]["facts"]) == as_floats(docs[-1])


def as_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_floats(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def test_new_facts_add_the_node_with_what_puppetdb_shows(inventory: InventoryStore) -> None:
    inventory.replace_facts_many(
        [command("a.example.com", {"os": {"family": "Debian"}}, 0, "staging")]
    )
    rows, _ = run_query(inventory, "nodes")
    assert rows == [
        {
            "certname": "a.example.com",
            "deactivated": None,
            "expired": None,
            "catalog_timestamp": None,
            "facts_timestamp": "2026-03-01T12:00:01.000Z",
            "report_timestamp": None,
            "catalog_environment": None,
            "facts_environment": "staging",
            "report_environment": None,
            "latest_report_status": None,
            "latest_report_noop": None,
            "latest_report_noop_pending": None,
            "latest_report_hash": None,
            "latest_report_job_id": None,
            "latest_report_corrective_change": None,
            "cached_catalog_status": None,
        }
    ]
    node = inventory.store.get_node("a.example.com")
    assert node.facts == {"os": {"family": "Debian"}}
    assert node.first_seen == node.last_seen == at(1)


def statements_during(inventory: InventoryStore, action: Any) -> list[str]:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()).upper())

    event.listen(inventory._engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(inventory._engine, "before_cursor_execute", record)
    return sent


def test_resending_unchanged_facts_writes_no_leaf_and_no_document(
    inventory: InventoryStore,
) -> None:
    fleet = [command(f"n{i}.example.com", {"i": i, "os": {"name": "Debian"}}, 0) for i in range(50)]
    inventory.replace_facts_many(fleet)
    again = [command(c.certname, dict(c.values), 10) for c in fleet]
    sent = statements_during(inventory, lambda: inventory.replace_facts_many(again))
    assert not [s for s in sent if "FACT_LEAVES" in s or ("FACTSETS" in s and "UPDATE" in s)]
    updates = [s for s in sent if s.startswith("UPDATE NODES")]
    assert len(updates) == 1 and "FACTS=" not in updates[0].replace(" ", "")
    rows, _ = run_query(inventory, "nodes", query=["=", "certname", "n7.example.com"])
    assert rows[0]["facts_timestamp"] == "2026-03-01T12:00:11.000Z"


def test_a_changed_fact_rewrites_that_leaf_alone(inventory: InventoryStore) -> None:
    before = {"uptime": 10, "os": {"family": "Debian", "release": "12"}, "roles": ["a", "b"]}
    inventory.replace_facts_many([command("a.example.com", before, 0)])
    after = {"uptime": 20, "os": {"family": "Debian", "release": "12"}, "roles": ["a"]}
    sent = statements_during(
        inventory, lambda: inventory.replace_facts_many([command("a.example.com", after, 5)])
    )
    leaf_writes = [s for s in sent if "FACT_LEAVES" in s and not s.startswith("SELECT")]
    assert len(leaf_writes) == 2  # one delete (roles[1]), one upsert (uptime)
    assert stored_rows(inventory, "a.example.com") == F.rows(after)


def test_a_leaf_whose_type_changes_is_found_by_its_new_type(inventory: InventoryStore) -> None:
    inventory.replace_facts_many([command("a.example.com", {"v": 7}, 0)])
    inventory.replace_facts_many([command("a.example.com", {"v": "7"}, 1)])
    rows, _ = run_query(inventory, "facts", query=["=", "value", "7"])
    assert [r["value"] for r in rows] == ["7"]
    assert run_query(inventory, "facts", query=["=", "value", 7])[0] == []
    paths, _ = run_query(inventory, "fact_paths", query=["=", "path", ["v"]])
    assert paths == [{"path": ["v"], "type": "string"}]  # the old type has no leaf left


def test_older_facts_are_stale_and_change_nothing(inventory: InventoryStore) -> None:
    inventory.replace_facts_many([command("a.example.com", {"v": 2}, 10)])
    assert inventory.replace_facts_many([command("a.example.com", {"v": 1}, 5)]) == [STALE]
    assert inventory.replace_facts_many([command("a.example.com", {"v": 3}, 10)]) == [INCORPORATED]
    assert inventory.store.get_node("a.example.com").facts == {"v": 3}


def test_in_one_batch_the_newest_facts_of_a_node_win(inventory: InventoryStore) -> None:
    batch = [
        command("a.example.com", {"v": 2}, 2),
        command("a.example.com", {"v": 3}, 3),
        command("a.example.com", {"v": 1}, 1),
    ]
    assert inventory.replace_facts_many(batch) == [STALE, INCORPORATED, STALE]
    assert stored_rows(inventory, "a.example.com") == F.rows({"v": 3})


def test_deactivating_keeps_the_facts_and_newer_facts_reactivate(inventory: InventoryStore) -> None:
    inventory.replace_facts_many([command("a.example.com", {"role": "web"}, 0)])
    assert inventory.deactivate_node("a.example.com", at(60)) == INCORPORATED
    assert run_query(inventory, "nodes")[0] == []
    assert run_query(inventory, "facts", query=["=", "node_state", "inactive"])[0] == [
        {"certname": "a.example.com", "name": "role", "value": "web", "environment": "production"}
    ]
    inventory.replace_facts_many([command("a.example.com", {"role": "web"}, 30)])  # older
    assert run_query(inventory, "nodes")[0] == []
    inventory.replace_facts_many([command("a.example.com", {"role": "db"}, 90)])
    rows, _ = run_query(inventory, "nodes", query=["extract", ["certname", "deactivated"]])
    assert rows == [{"certname": "a.example.com", "deactivated": None}]


def test_deactivating_before_newer_facts_is_stale(inventory: InventoryStore) -> None:
    inventory.replace_facts_many([command("a.example.com", {"v": 1}, 100)])
    assert inventory.deactivate_node("a.example.com", at(50)) == STALE
    assert run_query(inventory, "nodes", query=["extract", "certname"])[0] == [
        {"certname": "a.example.com"}
    ]


def test_deactivating_an_unknown_node_adds_it_deactivated(inventory: InventoryStore) -> None:
    inventory.deactivate_node("ghost.example.com", at(0))
    rows, _ = run_query(inventory, "nodes", query=["=", "node_state", "inactive"])
    assert [(r["certname"], r["deactivated"]) for r in rows] == [
        ("ghost.example.com", "2026-03-01T12:00:00.000Z")
    ]


def test_the_job_engines_entry_point_keeps_environment_and_sets_features(
    inventory: InventoryStore,
) -> None:
    inventory.replace_facts_many([command("a.example.com", {"v": 1}, 0, "staging")])
    inventory.record_facts_many(
        [("a.example.com", {"v": 2}, at(10)), ("b.example.com", {"w": 1}, at(10))],
        {"a.example.com": ["shell", "python", "shell"], "b.example.com": None},
    )
    rows, _ = run_query(inventory, "nodes", query=["extract", ["certname", "facts_environment"]])
    assert rows == [
        {"certname": "a.example.com", "facts_environment": "staging"},
        {"certname": "b.example.com", "facts_environment": "production"},
    ]
    assert inventory.store.node_features(["a.example.com", "b.example.com"]) == {
        "a.example.com": ["python", "shell"],
        "b.example.com": None,
    }
    assert stored_rows(inventory, "a.example.com") == F.rows({"v": 2})


def test_a_failed_write_leaves_no_path_id_behind(
    inventory: InventoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(inventory, "_insert_leaves", broken)
    with pytest.raises(RuntimeError):
        inventory.replace_facts_many([command("a.example.com", {"brand": {"new": "path"}}, 0)])
    monkeypatch.undo()
    inventory.replace_facts_many([command("a.example.com", {"brand": {"new": "path"}}, 0)])
    rows, _ = run_query(inventory, "inventory", query=["=", "facts.brand.new", "path"])
    assert [r["certname"] for r in rows] == ["a.example.com"]


def test_a_store_gives_one_inventory(store: Store) -> None:
    assert InventoryStore.of(store) is InventoryStore.of(store)
    with InventoryStore.of(store).read() as connection:
        assert connection.execute(select(func.count()).select_from(nodes)).scalar_one() == 0


def test_naive_times_are_refused(inventory: InventoryStore) -> None:
    naive = FactsCommand("a.example.com", {}, "production", datetime(2026, 1, 1))
    with pytest.raises(ValidationError, match="no time zone"):
        inventory.replace_facts_many([naive])


def test_facts_stored_before_the_inventory_existed_are_indexed_by_its_migration(
    db_url: str,
) -> None:
    from alembic import command as alembic

    from podium.store import schema
    from podium.store.engine import create_engine, database_url

    engine = create_engine(database_url(db_url), busy_timeout=5)
    with engine.begin() as connection:
        alembic.upgrade(schema.config(connection), "0003")
        connection.execute(
            nodes.insert().values(
                certname="old.example.com",
                facts={"os": {"family": "Debian"}, "roles": ["web", "db"], "big": 2**60},
                facts_timestamp=T0,
                first_seen=T0,
                last_seen=T0,
            )
        )
    engine.dispose()
    with Store(db_url) as store:
        store.migrate()
        inventory = InventoryStore.of(store)
        rows, _ = run_query(inventory, "inventory", query=["=", "facts.roles[1]", "db"])
        assert [r["certname"] for r in rows] == ["old.example.com"]
        assert stored_rows(inventory, "old.example.com") == F.rows(
            {"os": {"family": "Debian"}, "roles": ["web", "db"], "big": 2**60}
        )
        again = command("old.example.com", {"os": {"family": "Debian"}, "roles": ["web"]}, 5)
        inventory.replace_facts_many([again])  # the backfilled hash and leaves are right
        assert stored_rows(inventory, "old.example.com") == F.rows(dict(again.values))
