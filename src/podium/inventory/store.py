"""The inventory's storage: each node's facts document, and its leaves by path.

A node's document stays whole in ``nodes.facts`` (what queries return); every leaf of
it is also a row of ``fact_leaves`` keyed by ``(path_id, factset_id)``, so that a query
on a fact reads that path's rows and nothing else (see ``docs/inventory.md``).

Writes come in batches, one transaction each: :meth:`InventoryStore.replace_facts_many`
compares each document's hash with the stored one and rewrites only the leaves that
changed, so re-sending an unchanged fleet writes timestamps and nothing else.
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import Connection, bindparam, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from podium.errors import ValidationError
from podium.inventory import facts as F
from podium.inventory.query.paths import regexp
from podium.store import Store
from podium.store.engine import WRITE, translated_errors
from podium.store.tables import fact_leaves, fact_paths, factsets, nodes

INCORPORATED: Final = "incorporated"
STALE: Final = "stale"  # something newer about the node is stored already

_CHUNK: Final = 500  # names per IN (...) list
_WRITE_LOCK: Final = 0x706F64696E76  # PostgreSQL advisory lock key: one inventory writer
_QUERY_TIMEOUT_MS: Final = 60_000

Leaf = Sequence[Any]  # path_id, factset_id, s, n
Row = tuple[F.FactType, str | None, float | None]


@dataclass(frozen=True)
class FactsCommand:
    """PuppetDB's "replace facts" (wire format v5): a node's whole fact set."""

    certname: str
    values: Mapping[str, Any]
    environment: str | None
    producer_timestamp: datetime
    producer: str | None = None
    received: datetime | None = None  # becomes facts_timestamp; default: now
    hash: str = field(default="", compare=False)  # SHA-1 of values; the store's when ""


@dataclass
class _Node:
    deactivated: datetime | None
    expired: datetime | None
    producer_timestamp: datetime | None
    factset_id: int | None
    hash: str | None


@dataclass
class _Txn:
    """One write transaction, and the paths it added (cached only once it commits)."""

    connection: Connection
    new_paths: dict[tuple[str, F.FactType], int] = field(default_factory=dict)
    caught_up: bool = False  # read the paths other writers added since our last look


def now() -> datetime:
    """The current time as the inventory stores it (UTC, whole milliseconds)."""
    return millis(datetime.now(UTC))


def millis(at: datetime) -> datetime:
    """``at`` in UTC, cut to the millisecond (PuppetDB's precision)."""
    if at.utcoffset() is None:
        raise ValidationError(f"the time {at.isoformat()} has no time zone")
    at = at.astimezone(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class InventoryStore:
    """Facts and nodes for PuppetDB's API, in the database of a :class:`Store` (whose
    connection pool it shares). Thread-safe; writes are serialised."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dialect = store.dialect
        self._engine = store._engine  # one pool per database
        self._writer = self._engine.execution_options(**{WRITE: True})
        self._write_lock = threading.Lock()
        self._path_ids: dict[tuple[str, F.FactType], int] = {}
        self._paths_by_id: dict[int, tuple[str, F.FactType]] = {}
        self._max_path_id = 0
        self._trie = F.PathTrie()  # path ids of committed paths, and this write's new ones
        new = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(fact_leaves)
        self._upsert_leaf = new.values(
            path_id=bindparam("p_path"),
            factset_id=bindparam("p_set"),
            s=bindparam("p_s"),
            n=bindparam("p_n"),
        ).on_conflict_do_update(
            index_elements=[fact_leaves.c.path_id, fact_leaves.c.factset_id],
            set_={"s": new.excluded.s, "n": new.excluded.n},
        )

    @classmethod
    def of(cls, store: Store | InventoryStore) -> InventoryStore:
        """The inventory of ``store``, made once per Store."""
        if isinstance(store, InventoryStore):
            return store
        found = _BY_STORE.get(store)
        if found is None:
            found = _BY_STORE[store] = cls(store)
        return found

    # Writing

    def replace_facts(
        self,
        certname: str,
        values: Mapping[str, Any],
        environment: str | None,
        producer_timestamp: datetime,
        producer: str | None = None,
    ) -> str:
        """Store one node's facts; returns "incorporated" or "stale"."""
        command = FactsCommand(certname, values, environment, producer_timestamp, producer)
        return self.replace_facts_many([command])[0]

    def replace_facts_many(self, commands: Sequence[FactsCommand]) -> list[str]:
        """Store many nodes' facts in one transaction; a status per command, in order.

        A command older (by ``producer_timestamp``) than what is stored for its node is
        "stale" and changes nothing; a node deactivated before it is reactivated."""
        prepared = [_prepared(c) for c in commands]
        if not prepared:
            return []
        with self._write() as txn:
            statuses = self._apply(txn, prepared)
        return [statuses[id(c)] for c in prepared]

    def record_facts_many(
        self,
        items: Sequence[tuple[str, dict[str, Any], datetime]],
        features: Mapping[str, Sequence[str] | None] | None = None,
    ) -> None:
        """:meth:`podium.store.Store.record_facts_many` through the inventory: the job
        engine's entry point for the facts agents send (same arguments). The node keeps
        its environment ("production" for a new one)."""
        features = features or {}
        received = now()
        prepared = [
            _prepared(FactsCommand(name, values, None, at, None, received))
            for name, values, at in items
        ]
        rows = [
            {"p_certname": name, "p_features": _sorted(features.get(name))}
            for name in sorted({name for name, _, _ in items})
        ]
        if not rows:
            return
        with self._write() as txn:
            self._apply(txn, prepared, keep_environment=True)
            set_features = update(nodes).where(nodes.c.certname == bindparam("p_certname"))
            txn.connection.execute(set_features.values(features=bindparam("p_features")), rows)

    def deactivate_node(self, certname: str, producer_timestamp: datetime | None = None) -> str:
        """Take a node out of query results, keeping its facts (PuppetDB's "deactivate
        node" v3); "stale" when facts newer than ``producer_timestamp`` are stored. An
        unknown node is added, deactivated, as PuppetDB does."""
        at = millis(producer_timestamp or datetime.now(UTC))
        with self._write() as txn:
            connection = txn.connection
            known = self._load_nodes(connection, [certname]).get(certname)
            if known is None:
                row = {"certname": certname, "facts": {}, "first_seen": at, "last_seen": at}
                connection.execute(insert(nodes).values({**row, "deactivated": at}))
                return INCORPORATED
            if known.producer_timestamp is not None and known.producer_timestamp > at:
                return STALE
            if known.deactivated is None or known.deactivated < at:
                statement = update(nodes).where(nodes.c.certname == certname)
                connection.execute(statement.values(deactivated=at))
        return INCORPORATED

    def _apply(
        self, txn: _Txn, commands: Sequence[FactsCommand], *, keep_environment: bool = False
    ) -> dict[int, str]:
        statuses: dict[int, str] = {}
        latest: dict[str, FactsCommand] = {}
        for command in commands:  # several for one node in one batch: the newest counts
            seen = latest.get(command.certname)
            if seen is None or seen.producer_timestamp <= command.producer_timestamp:
                if seen is not None:
                    statuses[id(seen)] = STALE
                latest[command.certname] = command
            else:
                statuses[id(command)] = STALE
        names = sorted(latest)  # rows locked in one order: no deadlocks
        known = self._load_nodes(txn.connection, names)
        fresh: list[dict[str, Any]] = []
        updates: dict[bool, list[dict[str, Any]]] = {True: [], False: []}  # with facts?
        new_sets: list[FactsCommand] = []
        rewritten: dict[int, FactsCommand] = {}
        for name in names:
            command = latest[name]
            node = known.get(name)
            newer = node.producer_timestamp if node is not None else None
            if newer is not None and newer > command.producer_timestamp:
                statuses[id(command)] = STALE
                continue
            statuses[id(command)] = INCORPORATED
            row = _node_row(command, node, keep_environment)
            if node is None:
                fresh.append(row)
                new_sets.append(command)
                continue
            params = {f"p_{key}": value for key, value in row.items()}
            if node.factset_id is not None and node.hash == command.hash:
                updates[False].append(params)
            else:
                updates[True].append(params)
                if node.factset_id is None:
                    new_sets.append(command)
                else:
                    rewritten[node.factset_id] = command
        if fresh:
            txn.connection.execute(self._upsert_nodes(keep_environment), fresh)
        for with_facts, rows in updates.items():
            if rows:
                txn.connection.execute(_update_node(with_facts, keep_environment), rows)
        self._write_leaves(txn, new_sets, rewritten)
        return statuses

    def _write_leaves(
        self, txn: _Txn, new_sets: Sequence[FactsCommand], rewritten: Mapping[int, FactsCommand]
    ) -> None:
        connection = txn.connection
        added: list[Leaf] = []
        if new_sets:
            sets = [{"certname": c.certname, "hash": c.hash} for c in new_sets]
            connection.execute(insert(factsets), sets)
            ids = self._factset_ids(connection, [c.certname for c in new_sets])
            for command in new_sets:
                encoded, misses = self._trie.encode(command.values, ids[command.certname])
                for index, node, kind in misses:  # paths this process has no id for
                    path_id = self._path_id(txn, F.PathTrie.path(node), kind)
                    F.PathTrie.assign(node, kind, path_id)
                    encoded[index] = (path_id, *encoded[index][1:])
                added.extend(encoded)
        removed: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        if rewritten:
            hashes = [{"p_id": i, "p_hash": c.hash} for i, c in rewritten.items()]
            connection.execute(_UPDATE_HASH, hashes)
            # Compared with what the leaves hold, not with the old document: PostgreSQL's
            # jsonb may have rewritten its numbers (7e16 comes back an integer).
            stored = self._stored_rows(txn, list(rewritten))
            for factset, command in rewritten.items():
                changes = F.diff(stored.get(factset, {}), F.rows(command.values))
                for path, kind in changes.removed.items():
                    path_id = self._path_id(txn, path, kind)
                    removed.append({"p_path": path_id, "p_set": factset})
                for path, (kind, s, n) in changes.changed.items():
                    path_id = self._path_id(txn, path, kind)
                    changed.append({"p_path": path_id, "p_set": factset, "p_s": s, "p_n": n})
                for path, (kind, s, n) in changes.added.items():
                    path_id = self._path_id(txn, path, kind)
                    # An upsert: a leaf may be there already if the document was
                    # rewritten behind the inventory's back (Store.record_facts_many).
                    changed.append({"p_path": path_id, "p_set": factset, "p_s": s, "p_n": n})
        if removed:
            connection.execute(_DELETE_LEAF, removed)
        if changed:
            connection.execute(self._upsert_leaf, changed)
        if added:
            added.sort(key=_KEY)  # in key order: fewer pages touched
            self._insert_leaves(connection, added)

    def _insert_leaves(self, connection: Connection, rows: list[Leaf]) -> None:
        # The hot path of a fleet's first facts: straight to the driver, no SQLAlchemy.
        raw: Any = connection.connection.driver_connection
        if self.dialect == "postgresql":  # COPY in binary: psycopg encodes rows in C
            with raw.cursor() as cursor, cursor.copy(_COPY_LEAVES) as copy:
                copy.set_types(_LEAF_TYPES)
                for row in rows:
                    copy.write_row(row)
            return
        cursor = raw.cursor()
        try:
            cursor.executemany("INSERT INTO fact_leaves VALUES (?, ?, ?, ?)", rows)
        finally:
            cursor.close()

    def _upsert_nodes(self, keep_environment: bool) -> Any:
        # A node another writer (the job engine's Store) added meanwhile is updated.
        new = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(nodes)
        columns = ("facts", "facts_timestamp", "last_seen", "producer", "producer_timestamp")
        changes = {c: new.excluded[c] for c in columns}
        if not keep_environment:
            changes["facts_environment"] = new.excluded.facts_environment
        return new.on_conflict_do_update(index_elements=[nodes.c.certname], set_=changes)

    # Paths

    def _path_id(self, txn: _Txn, path: F.Path, kind: F.FactType) -> int:
        key = (F.encode_path(path), kind)
        found = self._path_ids.get(key)
        if found is None:
            found = txn.new_paths.get(key)
        if found is not None:
            return found
        if not txn.caught_up:
            self._catch_up(txn)
            found = txn.new_paths.get(key)
            if found is not None:
                return found
        values = {"path": key[0], "type": int(kind), "name": path[0], "depth": len(path) - 1}
        add = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(fact_paths)
        txn.connection.execute(add.values(values).on_conflict_do_nothing())
        wanted = (fact_paths.c.path == key[0]) & (fact_paths.c.type == int(kind))
        found = int(txn.connection.execute(select(fact_paths.c.id).where(wanted)).scalar_one())
        txn.new_paths[key] = found
        return found

    def _catch_up(self, txn: _Txn) -> None:
        """Read the paths other writers added since this process last looked."""
        query = select(fact_paths.c.id, fact_paths.c.path, fact_paths.c.type)
        for path_id, path, kind in txn.connection.execute(
            query.where(fact_paths.c.id > self._max_path_id)
        ):
            txn.new_paths[(path, F.FactType(kind))] = path_id
        txn.caught_up = True

    def _remember(self, paths: Mapping[tuple[str, F.FactType], int]) -> None:
        for key, path_id in paths.items():
            self._path_ids[key] = path_id
            self._paths_by_id[path_id] = key
            self._max_path_id = max(self._max_path_id, path_id)

    def _stored_rows(self, txn: _Txn, ids: Sequence[int]) -> dict[int, dict[F.Path, Row]]:
        """The leaves of these fact sets, path → (type, s, n). There is no index by fact
        set: the query probes the primary key for each known path."""
        out: dict[int, dict[F.Path, Row]] = {}
        every_path = select(fact_paths.c.id).scalar_subquery()
        for chunk in _chunks(sorted(ids)):
            query = select(fact_leaves).where(
                fact_leaves.c.factset_id.in_(chunk), fact_leaves.c.path_id.in_(every_path)
            )
            for path_id, factset, s, n in txn.connection.execute(query):
                key = self._paths_by_id.get(path_id) or self._find_path(txn, path_id)
                out.setdefault(factset, {})[F.decode_path(key[0])] = (key[1], s, n)
        return out

    def _find_path(self, txn: _Txn, path_id: int) -> tuple[str, F.FactType]:
        if not txn.caught_up:
            self._catch_up(txn)
        for key, known in txn.new_paths.items():
            if known == path_id:
                return key
        raise AssertionError(f"fact path {path_id} is in fact_leaves but not in fact_paths")

    # Reading

    def _load_nodes(self, connection: Connection, names: Sequence[str]) -> dict[str, _Node]:
        found: dict[str, _Node] = {}
        columns = (
            nodes.c.certname,
            nodes.c.deactivated,
            nodes.c.expired,
            nodes.c.producer_timestamp,
            factsets.c.id,
            factsets.c.hash,
        )
        joined = nodes.outerjoin(factsets, factsets.c.certname == nodes.c.certname)
        for chunk in _chunks(names):
            query = select(*columns).select_from(joined).where(nodes.c.certname.in_(chunk))
            for name, *state in connection.execute(query):
                found[name] = _Node(*state)
        return found

    def _factset_ids(self, connection: Connection, names: Sequence[str]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for chunk in _chunks(sorted(names)):
            query = select(factsets.c.certname, factsets.c.id)
            found = connection.execute(query.where(factsets.c.certname.in_(chunk)))
            ids.update((name, factset) for name, factset in found)
        return ids

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A transaction for queries: REGEXP on SQLite, a statement timeout on PostgreSQL."""
        with translated_errors(self.store.url), self._engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.execute(text(f"SET LOCAL statement_timeout = {_QUERY_TIMEOUT_MS}"))
            else:
                info = connection.info  # lives as long as the DBAPI connection
                raw = connection.connection.driver_connection
                if raw is not None and not info.get("podium_regexp"):
                    raw.create_function("regexp", 2, regexp, deterministic=True)
                    info["podium_regexp"] = True
            yield connection

    @contextmanager
    def _write(self) -> Iterator[_Txn]:
        with self._write_lock, translated_errors(self.store.url):
            try:
                with self._writer.begin() as connection:
                    if self.dialect == "postgresql":
                        lock = text("SELECT pg_advisory_xact_lock(:key)")
                        connection.execute(lock, {"key": _WRITE_LOCK})
                    txn = _Txn(connection)
                    yield txn
            except BaseException:
                self._trie = F.PathTrie()  # it may hold ids of paths rolled back
                raise
            self._remember(txn.new_paths)  # committed: these ids exist for good


_BY_STORE: weakref.WeakKeyDictionary[Store, InventoryStore] = weakref.WeakKeyDictionary()

_UPDATE_HASH = (
    update(factsets).where(factsets.c.id == bindparam("p_id")).values(hash=bindparam("p_hash"))
)
_DELETE_LEAF = fact_leaves.delete().where(
    (fact_leaves.c.path_id == bindparam("p_path"))
    & (fact_leaves.c.factset_id == bindparam("p_set"))
)
_KEY = operator.itemgetter(0, 1)  # a leaf's primary key
_COPY_LEAVES = "COPY fact_leaves (path_id, factset_id, s, n) FROM STDIN (FORMAT BINARY)"
_LEAF_TYPES = ("int4", "int4", "text", "float8")
_NODE_COLUMNS = (
    "facts_timestamp",
    "last_seen",
    "producer",
    "producer_timestamp",
    "deactivated",
    "expired",
)


@lru_cache(maxsize=4)
def _update_node(with_facts: bool, keep_environment: bool) -> Any:
    values: dict[str, Any] = {c: bindparam(f"p_{c}") for c in _NODE_COLUMNS}
    environment: Any = bindparam("p_facts_environment")
    values["facts_environment"] = (
        func.coalesce(nodes.c.facts_environment, environment) if keep_environment else environment
    )
    if with_facts:
        values["facts"] = bindparam("p_facts", type_=nodes.c.facts.type)
    statement = update(nodes).where(nodes.c.certname == bindparam("p_certname"))
    return statement.values(values)


def _prepared(command: FactsCommand) -> FactsCommand:
    if not isinstance(command.values, Mapping):
        raise ValidationError(f"the facts of {command.certname} are not a JSON object")
    received = millis(command.received) if command.received else now()
    at = millis(command.producer_timestamp)
    digest = command.hash or F.digest(command.values)
    return replace(command, producer_timestamp=at, received=received, hash=digest)


def _node_row(command: FactsCommand, node: _Node | None, keep_environment: bool) -> dict[str, Any]:
    """The node's columns after ``command``."""
    at = command.producer_timestamp
    deactivated = expired = None
    if node is not None:  # still inactive if that happened after these facts
        if node.deactivated is not None and node.deactivated >= at:
            deactivated = node.deactivated
        if node.expired is not None and node.expired >= at:
            expired = node.expired
    return {
        "certname": command.certname,
        "facts": command.values,
        "facts_timestamp": command.received,
        "first_seen": command.received,
        "last_seen": command.received,
        "facts_environment": "production" if keep_environment else command.environment,
        "producer": command.producer,
        "producer_timestamp": at,
        "deactivated": deactivated,
        "expired": expired,
    }


def _sorted(features: Sequence[str] | None) -> list[str] | None:
    return None if features is None else sorted(set(features))


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
