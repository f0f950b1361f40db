"""The inventory's storage: each node's facts document, and its leaves by path; Puppet
runs' reports and nodes' catalogs (written by :mod:`podium.inventory.report_store`).

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

import logging
import operator
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson
from sqlalchemy import (
    Connection,
    Select,
    case,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from podium.errors import ValidationError
from podium.inventory import facts as F
from podium.store import Store
from podium.store.engine import WRITE, translated_errors
from podium.store.tables import UTCDateTime, fact_leaves, fact_paths, factsets, nodes

if TYPE_CHECKING:
    from podium.inventory.reports import Catalog, Report

log = logging.getLogger(__name__)

INCORPORATED: Final = "incorporated"
STALE: Final = "stale"  # something newer about the node is stored already

_CHUNK: Final = 500  # names per IN (...) list, nodes (and documents) per statement
_LEAF_CHUNK: Final = 20_000  # leaves per statement
_WRITE_LOCK: Final = 0x706F64696E76  # PostgreSQL advisory lock key: one inventory writer
_QUERY_TIMEOUT_MS: Final = 60_000
_ANALYZE_AFTER: Final = 100_000  # leaves inserted before PostgreSQL's statistics are redone
_ANALYZE: Final = (  # not the documents: sampling them would read their TOAST
    "ANALYZE fact_leaves, fact_paths, factsets, "
    "nodes (certname, facts_environment, facts_timestamp, deactivated, expired)"
)
# Reports and catalogs: their rows (events, resources) before the statistics are redone.
_ANALYZE_RUNS_AFTER: Final = 10_000
_ANALYZE_RUNS: Final = (
    "ANALYZE reports, resource_events, catalogs, catalog_resources, catalog_edges, "
    "nodes (certname, latest_report_hash, deactivated, expired)"
)
# Leaves come fact set by fact set, in increasing ids: a stable sort by path alone puts
# them in primary key order (and compares integers, not tuples).
_KEY = operator.itemgetter(0)

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
    leaves: int = 0  # leaves inserted


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
        self._grown = 0  # leaves inserted since the planner's statistics were made
        self._analyzed = 0  # leaves then
        self._analyzing = threading.Event()
        self._runs_grown = 0  # report and catalog rows written since the last statistics
        self._runs_analyzed = 0
        self._analyzing_runs = threading.Event()

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
            self._bulk(txn.connection, "features", ("certname", "features"), rows)

    def store_reports(self, reports: Sequence[Report]) -> list[str]:
        """Store Puppet run reports in one transaction; a status per report, in order:
        "incorporated", or "stale" for one stored already (the same hash). Every report
        is kept; a node's newest agent report becomes its latest (``nodes``' report
        fields). See :mod:`podium.inventory.report_store`."""
        from podium.inventory.report_store import write_reports

        if not reports:
            return []
        with self._write() as txn:
            stored = write_reports(txn.connection, self.dialect, reports, now())
        self._runs_written(
            sum(1 + len(r.events) for r, done in zip(reports, stored, strict=True) if done)
        )
        return [INCORPORATED if done else STALE for done in stored]

    def replace_catalogs(self, catalogs: Sequence[Catalog]) -> list[str]:
        """Replace nodes' catalogs in one transaction; a status per catalog, in order:
        "incorporated", or "stale" when a newer catalog (by ``producer_timestamp``) is
        stored for its node or comes later in the batch."""
        from podium.inventory.report_store import write_catalogs

        if not catalogs:
            return []
        with self._write() as txn:
            stored = write_catalogs(txn.connection, self.dialect, catalogs, now())
        rows = (
            1 + len(c.resources) + len(c.edges)
            for c, done in zip(catalogs, stored, strict=True)
            if done
        )
        self._runs_written(sum(rows))
        return [INCORPORATED if done else STALE for done in stored]

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
        connection = txn.connection
        keep = "_keep" if keep_environment else ""
        self._bulk(connection, f"insert_nodes{keep}", _INSERTED, self._timed(fresh, _INSERTED))
        for with_facts, rows in updates.items():
            columns: Sequence[str] = _UPDATED_WITH_FACTS if with_facts else _UPDATED
            kind = f"update_nodes{'_facts' if with_facts else ''}{keep}"
            self._bulk(connection, kind, columns, self._timed(rows, columns))
        self._write_leaves(txn, new_sets, rewritten)
        return statuses

    def _write_leaves(
        self, txn: _Txn, new_sets: Sequence[FactsCommand], rewritten: Mapping[int, FactsCommand]
    ) -> None:
        connection = txn.connection
        added: list[Leaf] = []
        if new_sets:
            sets = [(c.certname, c.hash) for c in new_sets]
            self._bulk(connection, "insert_factsets", ("certname", "hash"), sets)
            ids = self._factset_ids(connection, [c.certname for c in new_sets])
            for command in sorted(new_sets, key=lambda c: ids[c.certname]):
                encoded, misses = self._trie.encode(command.values, ids[command.certname])
                for index, node, kind in misses:  # paths this process has no id for
                    path_id = self._path_id(txn, F.PathTrie.path(node), kind)
                    F.PathTrie.assign(node, kind, path_id)
                    encoded[index] = (path_id, *encoded[index][1:])
                added.extend(encoded)
        removed: list[tuple[int, int]] = []
        upserts: list[tuple[int, int, str | None, float | None]] = []
        if rewritten:
            hashes = [(i, c.hash) for i, c in rewritten.items()]
            self._bulk(connection, "update_hashes", ("id", "hash"), hashes)
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
                    upserts.append((self._path_id(txn, path, kind), factset, s, n))
        self._bulk(connection, "delete_leaves", ("path_id", "factset_id"), removed)
        self._bulk(connection, "upsert_leaves", _LEAF_COLUMNS, upserts)
        if added:
            added.sort(key=_KEY)  # in key order: fewer pages touched
            self._insert_leaves(connection, added)
            txn.leaves += len(added)

    def _insert_leaves(self, connection: Connection, rows: list[Leaf]) -> None:
        # The hot path of a fleet's first facts: straight to the driver, no SQLAlchemy.
        raw: Any = connection.connection.driver_connection
        if self.dialect == "postgresql":  # COPY in binary: psycopg encodes rows in C
            with raw.cursor() as cursor, cursor.copy(_COPY_LEAVES) as copy:
                copy.set_types(_LEAF_TYPES)
                for row in rows:
                    copy.write_row(row)
            return
        self._bulk(connection, "insert_leaves", _LEAF_COLUMNS, rows)

    def _bulk(
        self,
        connection: Connection,
        statement: str,
        names: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """One of ``_BULK``'s statements on many rows, passed as one JSON parameter that
        the database takes apart: one statement, one step, whatever the number of rows
        (and one SQL text, not one a batch size for the statement caches to keep)."""
        sql = _BULK[self.dialect][statement]
        size = _CHUNK if statement.endswith(("nodes", "keep", "facts")) else _LEAF_CHUNK
        for chunk in _chunks(rows, size):
            if self.dialect == "postgresql":  # objects, for json_populate_recordset
                data = orjson.dumps([dict(zip(names, row, strict=True)) for row in chunk])
            else:  # arrays, for json_each and ->>
                data = orjson.dumps(chunk)
            connection.exec_driver_sql(sql, (data.decode(),))

    def _timed(self, rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[list[Any]]:
        """Rows of node columns, timestamps as the database takes them in JSON: ISO
        with a zone for PostgreSQL, SQLite's text of naive UTC for SQLite."""
        out = []
        for row in rows:
            values = [row[n] for n in names]
            for i, value in enumerate(values):
                if isinstance(value, datetime):
                    values[i] = _json_time(value, self.dialect)
            out.append(values)
        return out

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
            query = query.with_hint(nodes, COVERING, "sqlite")
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
                    from podium.inventory.query.paths import regexp  # the query's own

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
            self._grown += txn.leaves
            if self.dialect == "postgresql" and self._grown > max(_ANALYZE_AFTER, self._analyzed):
                self._analyze()

    def _analyze(self) -> None:
        """New statistics for PostgreSQL's planner, on a thread of their own (the writer
        goes on meanwhile), once the leaves have doubled since the last time: a fleet's
        first facts are millions of rows autovacuum has not looked at yet, and without
        statistics the planner takes a path's rows for a handful."""
        if self._analyzing.is_set():
            return
        self._analyzing.set()
        self._analyzed += self._grown
        self._grown = 0
        self._in_background(_ANALYZE, self._analyzing)

    def _runs_written(self, rows: int) -> None:
        """Likewise for reports and catalogs, whose rows double much sooner: without
        statistics, a query of a fleet's events joins them row by row (minutes)."""
        with self._write_lock:  # the writers' counters
            self._runs_grown += rows
            if self.dialect != "postgresql" or self._analyzing_runs.is_set():
                return
            if self._runs_grown > max(_ANALYZE_RUNS_AFTER, self._runs_analyzed):
                self._analyzing_runs.set()
                self._runs_analyzed += self._runs_grown
                self._runs_grown = 0
                self._in_background(_ANALYZE_RUNS, self._analyzing_runs)

    def _in_background(self, statement: str, running: threading.Event) -> None:
        def run() -> None:
            try:
                with translated_errors(self.store.url), self._engine.begin() as connection:
                    connection.exec_driver_sql(statement)
            except Exception:  # statistics are a help, not a need
                log.warning("could not ANALYZE the inventory's tables", exc_info=True)
            finally:
                running.clear()

        self.store.in_background(run, "podium-inventory-analyze")


_BY_STORE: weakref.WeakKeyDictionary[Store, InventoryStore] = weakref.WeakKeyDictionary()
# SQLite's planner, without statistics, prefers the unique index on certname and then
# reads the row, whose facts document fills the page: the covering index reads neither.
COVERING: Final = "INDEXED BY ix_nodes_inventory"

_LEAF_COLUMNS = ("path_id", "factset_id", "s", "n")
_INSERTED = (
    "certname",
    "facts",
    "facts_timestamp",
    "first_seen",
    "last_seen",
    "facts_environment",
    "producer",
    "producer_timestamp",
    "deactivated",
    "expired",
)
_UPDATED = (
    "certname",
    "facts_timestamp",
    "last_seen",
    "producer",
    "producer_timestamp",
    "deactivated",
    "expired",
    "facts_environment",
)
_UPDATED_WITH_FACTS = (*_UPDATED, "facts")


def _statements(dialect: str) -> dict[str, str]:
    """The bulk statements, each taking its rows as one JSON parameter: an array of
    arrays for SQLite (``json_each``), of objects for PostgreSQL (its row types). The
    names in them are this module's constants; every value is in the parameter."""

    def rows(table: str, names: Sequence[str]) -> str:
        if dialect == "postgresql":
            source = f"json_populate_recordset(NULL::{table}, %s::json)"
            return " ".join(["SELECT", ", ".join(names), "FROM", source])
        picked = ", ".join(f"value->>{i} AS {name}" for i, name in enumerate(names))
        return " ".join(["SELECT", picked, "FROM json_each(?) WHERE true"])

    def update(table: str, key: str, names: Sequence[str], sets: str) -> str:
        where = f"WHERE {table}.{key} = v.{key}"
        return " ".join(["UPDATE", table, "SET", sets, f"FROM ({rows(table, names)}) AS v", where])

    def assign(names: Sequence[str], keep: bool = False) -> str:
        out = [f"{n} = v.{n}" for n in names if n not in ("certname", "facts_environment")]
        if "facts_environment" in names:
            env = "v.facts_environment"
            out.append(
                f"facts_environment = coalesce(nodes.{env[2:]}, {env})"
                if keep
                else f"facts_environment = {env}"
            )
        return ", ".join(out)

    changed = ("facts", "facts_timestamp", "last_seen", "producer", "producer_timestamp")
    conflict = "ON CONFLICT (certname) DO UPDATE SET " + ", ".join(
        f"{n} = excluded.{n}" for n in changed
    )
    leaves = f"INSERT INTO fact_leaves ({', '.join(_LEAF_COLUMNS)}) "
    leaves += rows("fact_leaves", _LEAF_COLUMNS)
    keys = rows("fact_leaves", ("path_id", "factset_id"))
    new_nodes = f"INSERT INTO nodes ({', '.join(_INSERTED)}) {rows('nodes', _INSERTED)} "
    out = {
        "insert_leaves": leaves,
        "upsert_leaves": leaves + " ON CONFLICT (path_id, factset_id) DO UPDATE SET "
        "s = excluded.s, n = excluded.n",
        "delete_leaves": " ".join(
            ["DELETE FROM fact_leaves WHERE (path_id, factset_id) IN", f"({keys})"]
        ),
        "insert_factsets": "INSERT INTO factsets (certname, hash) "
        + rows("factsets", ("certname", "hash")),
        "update_hashes": update("factsets", "id", ("id", "hash"), "hash = v.hash"),
        "features": update("nodes", "certname", ("certname", "features"), "features = v.features"),
        "insert_nodes": new_nodes + conflict + ", facts_environment = excluded.facts_environment",
        "insert_nodes_keep": new_nodes + conflict,
    }
    for facts, names in (("", _UPDATED), ("_facts", _UPDATED_WITH_FACTS)):
        for keep in (False, True):
            key = f"update_nodes{facts}{'_keep' if keep else ''}"
            out[key] = update("nodes", "certname", names, assign(names, keep))
    return out


# Table and column names only: every value is in the one JSON parameter.
_BULK = {dialect: _statements(dialect) for dialect in ("sqlite", "postgresql")}
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


def _json_time(at: datetime, dialect: str) -> str:
    utc = at.astimezone(UTC)
    if dialect == "postgresql":
        return utc.isoformat()
    return utc.replace(tzinfo=None).isoformat(" ", "microseconds")  # as UTCDateTime stores


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
