"""The inventory's storage: each node's facts document, and its leaves by path.

A node's document stays whole in ``nodes.facts`` (what queries return); every leaf of
it is also a row of ``fact_leaves`` keyed by ``(path_id, factset_id)``, so that a query
on a fact reads that path's rows and nothing else (see ``docs/inventory.md``).

Writes come in batches, one transaction each: :meth:`InventoryStore.replace_facts_many`
compares each document's hash with the stored one and rewrites only the leaves that
changed, so re-sending an unchanged fleet writes timestamps and nothing else. A batch
is a handful of statements whatever its size (multi-row VALUES, rows read back as one
JSON value on SQLite): each statement the driver steps through row by row hands the
GIL over, and a busy server would make the writer wait for it at every row.
"""

from __future__ import annotations

import itertools
import operator
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from sqlalchemy import (
    Connection,
    FromClause,
    Select,
    String,
    bindparam,
    case,
    cast,
    column,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
    values,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.types import TypeEngine

from podium.errors import ValidationError
from podium.inventory import facts as F
from podium.inventory.query.paths import regexp
from podium.store import Store
from podium.store.engine import WRITE, translated_errors
from podium.store.tables import UTCDateTime, fact_leaves, fact_paths, factsets, nodes

INCORPORATED: Final = "incorporated"
STALE: Final = "stale"  # something newer about the node is stored already

_CHUNK: Final = 400  # rows per multi-row statement of nodes (a dozen parameters each)
_LEAF_CHUNK: Final = 8000  # leaves per multi-row INSERT (4 parameters each)
_WRITE_LOCK: Final = 0x706F64696E76  # PostgreSQL advisory lock key: one inventory writer
_QUERY_TIMEOUT_MS: Final = 60_000
_KEY = operator.itemgetter(0, 1)  # a leaf's primary key

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
        self._insert = pg_insert if self.dialect == "postgresql" else sqlite_insert

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
        rows = [(name, _sorted(features.get(name))) for name in sorted({n for n, _, _ in items})]
        if not rows:
            return
        with self._write() as txn:
            self._apply(txn, prepared, keep_environment=True)
            for chunk in _chunks(rows, _CHUNK):
                shape = [("certname", String()), ("features", nodes.c.features.type)]
                v = self._values(shape, chunk)
                set_features = update(nodes).where(nodes.c.certname == v.c.certname)
                features_of = self._typed(v.c.features, nodes.c.features.type)
                txn.connection.execute(set_features.values(features=features_of))

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
            elif node.factset_id is not None and node.hash == command.hash:
                updates[False].append(row)
            else:
                updates[True].append(row)
                if node.factset_id is None:
                    new_sets.append(command)
                else:
                    rewritten[node.factset_id] = command
        for chunk in _chunks(fresh, _CHUNK):
            txn.connection.execute(self._upsert_nodes(chunk, keep_environment))
        for with_facts, rows in updates.items():
            for chunk in _chunks(rows, _CHUNK):
                txn.connection.execute(self._update_nodes(chunk, with_facts, keep_environment))
        self._write_leaves(txn, new_sets, rewritten)
        return statuses

    def _write_leaves(
        self, txn: _Txn, new_sets: Sequence[FactsCommand], rewritten: Mapping[int, FactsCommand]
    ) -> None:
        connection = txn.connection
        added: list[Leaf] = []
        if new_sets:
            for chunk in _chunks([{"certname": c.certname, "hash": c.hash} for c in new_sets]):
                connection.execute(insert(factsets).values(chunk))
            ids = self._factset_ids(connection, [c.certname for c in new_sets])
            for command in new_sets:
                encoded, misses = self._trie.encode(command.values, ids[command.certname])
                for index, node, kind in misses:  # paths this process has no id for
                    path_id = self._path_id(txn, F.PathTrie.path(node), kind)
                    F.PathTrie.assign(node, kind, path_id)
                    encoded[index] = (path_id, *encoded[index][1:])
                added.extend(encoded)
        removed: list[tuple[int, int]] = []
        upserts: list[dict[str, Any]] = []
        if rewritten:
            for chunk in _chunks([(i, c.hash) for i, c in rewritten.items()]):
                v = self._values([("id", factsets.c.id.type), ("hash", String())], chunk)
                statement = update(factsets).where(factsets.c.id == v.c.id)
                connection.execute(statement.values(hash=v.c.hash))
            # Compared with what the leaves hold, not with the old document: PostgreSQL's
            # jsonb may have rewritten its numbers (7e16 comes back an integer).
            stored = self._stored_rows(txn, list(rewritten))
            for factset, command in rewritten.items():
                changes = F.diff(stored.get(factset, {}), F.rows(command.values))
                for path, kind in changes.removed.items():
                    removed.append((self._path_id(txn, path, kind), factset))
                for path, (kind, s, n) in {**changes.changed, **changes.added}.items():
                    # An upsert: a leaf may be there already if the document was
                    # rewritten behind the inventory's back (Store.record_facts_many).
                    path_id = self._path_id(txn, path, kind)
                    upserts.append({"path_id": path_id, "factset_id": factset, "s": s, "n": n})
        key = tuple_(fact_leaves.c.path_id, fact_leaves.c.factset_id)
        for chunk in _chunks(removed, _LEAF_CHUNK):
            connection.execute(fact_leaves.delete().where(key.in_(chunk)))
        for chunk in _chunks(upserts, _LEAF_CHUNK // 2):
            new = self._insert(fact_leaves).values(chunk)
            connection.execute(
                new.on_conflict_do_update(
                    index_elements=[fact_leaves.c.path_id, fact_leaves.c.factset_id],
                    set_={"s": new.excluded.s, "n": new.excluded.n},
                )
            )
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
            for chunk in _chunks(rows, _LEAF_CHUNK):
                places = ",".join(["(?,?,?,?)"] * len(chunk))  # placeholders, nothing else
                sql = f"INSERT INTO fact_leaves VALUES {places}"  # noqa: S608
                cursor.execute(sql, list(itertools.chain.from_iterable(chunk)))
        finally:
            cursor.close()

    def _upsert_nodes(self, rows: Sequence[dict[str, Any]], keep_environment: bool) -> Any:
        # A node another writer (the job engine's Store) added meanwhile is updated.
        new = self._insert(nodes).values(list(rows))
        columns = ("facts", "facts_timestamp", "last_seen", "producer", "producer_timestamp")
        changes = {c: new.excluded[c] for c in columns}
        if not keep_environment:
            changes["facts_environment"] = new.excluded.facts_environment
        return new.on_conflict_do_update(index_elements=[nodes.c.certname], set_=changes)

    def _update_nodes(
        self, rows: Sequence[dict[str, Any]], with_facts: bool, keep_environment: bool
    ) -> Any:
        names = ["certname", *_NODE_COLUMNS, "facts_environment"] + ["facts"] * with_facts
        v = self._values(
            [(n, nodes.c[n].type) for n in names], [tuple(r[n] for n in names) for r in rows]
        )
        changes: dict[str, Any] = {n: self._typed(v.c[n], nodes.c[n].type) for n in names[1:]}
        if keep_environment:
            changes["facts_environment"] = func.coalesce(
                nodes.c.facts_environment, changes["facts_environment"]
            )
        return update(nodes).where(nodes.c.certname == v.c.certname).values(changes)

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
        txn.connection.execute(self._insert(fact_paths).values(values).on_conflict_do_nothing())
        wanted = (fact_paths.c.path == key[0]) & (fact_paths.c.type == int(kind))
        found = int(txn.connection.execute(select(fact_paths.c.id).where(wanted)).scalar_one())
        txn.new_paths[key] = found
        return found

    def _catch_up(self, txn: _Txn) -> None:
        """Read the paths other writers added since this process last looked."""
        query = select(fact_paths.c.id, fact_paths.c.path, fact_paths.c.type)
        query = query.where(fact_paths.c.id > self._max_path_id)
        for path_id, path, kind in self._rows(txn.connection, query):
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
        number: Any = fact_leaves.c.n
        if self.dialect == "sqlite":  # through JSON as text: its numbers have 15 digits
            number = case((number.is_not(None), func.printf("%.17g", number)))
        for chunk in _chunks(sorted(ids)):
            query = select(fact_leaves.c.path_id, fact_leaves.c.factset_id, fact_leaves.c.s)
            query = query.add_columns(number).where(
                fact_leaves.c.factset_id.in_(chunk), fact_leaves.c.path_id.in_(every_path)
            )
            for path_id, factset, s, text_or_n in self._rows(txn.connection, query):
                n = None if text_or_n is None else float(text_or_n)
                key = self._paths_by_id.get(path_id)
                if key is None:
                    if not txn.caught_up:
                        self._catch_up(txn)
                    key = next(k for k, v in txn.new_paths.items() if v == path_id)
                out.setdefault(factset, {})[F.decode_path(key[0])] = (key[1], s, n)
        return out

    # Reading

    def _load_nodes(self, connection: Connection, names: Sequence[str]) -> dict[str, _Node]:
        found: dict[str, _Node] = {}
        columns = (nodes.c.deactivated, nodes.c.expired, nodes.c.producer_timestamp)
        joined = nodes.outerjoin(factsets, factsets.c.certname == nodes.c.certname)
        for chunk in _chunks(names):
            query = select(nodes.c.certname, *columns, factsets.c.id, factsets.c.hash)
            query = query.select_from(joined).where(nodes.c.certname.in_(chunk))
            for name, deactivated, expired, at, factset, digest in self._rows(connection, query):
                times = (_timestamp(deactivated), _timestamp(expired), _timestamp(at))
                found[name] = _Node(*times, factset, digest)
        return found

    def _factset_ids(self, connection: Connection, names: Sequence[str]) -> dict[str, int]:
        ids: dict[str, int] = {}
        for chunk in _chunks(sorted(names)):
            query = select(factsets.c.certname, factsets.c.id)
            found = self._rows(connection, query.where(factsets.c.certname.in_(chunk)))
            ids.update((name, factset) for name, factset in found)
        return ids

    def _rows(self, connection: Connection, query: Select[Any]) -> list[Sequence[Any]]:
        """The rows of ``query``; on SQLite as one JSON value (one step, not one a row):
        columns come back as JSON has them, timestamps as text."""
        if self.dialect == "postgresql":
            return list(connection.execute(query))
        sub = query.subquery()
        every = select(func.json_group_array(func.json_array(*sub.c))).select_from(sub)
        return orjson.loads(connection.execute(every).scalar_one())  # type: ignore[no-any-return]

    def _values(
        self, columns: Sequence[tuple[str, TypeEngine[Any]]], rows: Sequence[Sequence[Any]]
    ) -> FromClause:
        """``(VALUES ...)`` as a table ``v`` of these columns (SQLite names its columns
        column1, column2... and takes no list of names after the alias)."""
        if self.dialect == "postgresql":
            return values(*[column(n, t) for n, t in columns], name="v").data(list(rows))
        params = []
        groups = []
        for r, row in enumerate(rows):
            names = []
            for c, ((_, type_), value) in enumerate(zip(columns, row, strict=True)):
                params.append(bindparam(f"v{r}_{c}", value, type_=type_))
                names.append(f":v{r}_{c}")
            groups.append(f"({', '.join(names)})")
        # Column names and placeholders only: the values are bound parameters.
        head = ", ".join(f"column{i + 1} AS {name}" for i, (name, _) in enumerate(columns))
        sql = text(f"SELECT {head} FROM (VALUES {', '.join(groups)})")  # noqa: S608
        sql = sql.bindparams(*params)
        return sql.columns(*[column(n, t) for n, t in columns]).subquery("v")

    def _typed(self, value: Any, type_: TypeEngine[Any]) -> Any:
        """``value`` of a VALUES table as ``type_``: PostgreSQL takes a column of NULLs
        for text (a CAST on SQLite would turn a timestamp's text into a number)."""
        return cast(value, type_) if self.dialect == "postgresql" else value

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


def _timestamp(value: Any) -> datetime | None:
    """A timestamp as :meth:`InventoryStore._rows` gives it: a datetime, or SQLite's text."""
    if value is None or isinstance(value, datetime):
        return value
    return UTCDateTime().process_result_value(datetime.fromisoformat(value), None)  # type: ignore[arg-type]


def _sorted(features: Sequence[str] | None) -> list[str] | None:
    return None if features is None else sorted(set(features))


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
