"""The Store: Podium's jobs, nodes and events in SQLite or PostgreSQL.

Every public method is one transaction and takes its own connection from the engine's
pool, so a Store is safe to share between threads: the async server calls it from
worker threads. Writes that fan out to many nodes are one ``executemany`` each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import asc, bindparam, delete, desc, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from podium.errors import NotFound, StoreError, ValidationError
from podium.files import exclusive_lock
from podium.store import queries, schema
from podium.store.engine import (
    WRITE,
    create_engine,
    database_url,
    json_dumps,
    translated_errors,
)
from podium.store.queries import JOB_ORDERINGS
from podium.store.records import (
    TERMINAL_JOB_STATES,
    TERMINAL_NODE_STATES,
    EventRecord,
    JobNodeRecord,
    JobRecord,
    JobUpdate,
    NewEvent,
    NodeRecord,
    NodeUpdate,
)
from podium.store.tables import UTCDateTime, job_events, job_nodes, jobs, nodes

_NS = "puppetlabs.orchestrator"


_BACKGROUND_WAIT = 120.0  # seconds close() waits for background work (an ANALYZE)


class Store:
    """Podium's data in the database at ``url``; call :meth:`migrate` before first use.

    ``url`` is ``sqlite:///PATH`` (the default kind; a plain path works too) or
    ``postgresql://USER:PASSWORD@HOST/DATABASE``.
    """

    def __init__(self, url: str, *, busy_timeout: float = 30.0) -> None:
        self._background: set[threading.Thread] = set()
        self._background_lock = threading.Lock()
        self.url = database_url(url)
        self.dialect: str = self.url.get_backend_name()
        try:
            self._engine = create_engine(self.url, busy_timeout=busy_timeout)
        except OSError as error:
            raise StoreError(
                f"cannot create the directory of the SQLite file {self.url.database}: "
                f"{error.strerror}; create it or choose another path"
            ) from error
        self._writer = self._engine.execution_options(**{WRITE: True})
        self._upsert_facts = queries.upsert_node(
            self.dialect, ("facts", "facts_timestamp", "last_seen", "features")
        )
        self._upsert_seen = queries.upsert_node(self.dialect, ("last_seen",))
        self._apply_sql, self._apply_names = self._compile(queries.APPLY_NODE_UPDATE)
        self._event_sql, self._event_names = self._compile(queries.INSERT_EVENT)

    def _compile(self, statement: Any) -> tuple[str, list[str] | None]:
        """SQL for the driver's executemany, and its parameter order if positional."""
        compiled = statement.compile(dialect=self._engine.dialect)
        return str(compiled), compiled.positiontup if compiled.positional else None

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def migrate(self) -> None:
        """Create or upgrade the schema to what this code expects; a no-op when it is."""
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            # Processes and threads migrating one file take turns (PostgreSQL has an
            # advisory lock for this): SQLite refuses a second schema writer outright.
            with exclusive_lock(Path(f"{self.url.database}.migrate-lock")):
                self._migrate()
        else:
            self._migrate()

    def _migrate(self) -> None:
        with translated_errors(self.url), self._engine.connect() as connection:
            sqlite = self.dialect == "sqlite"
            raw = connection.connection.driver_connection
            if sqlite and raw is not None:
                # Rebuilding a table in a migration must not cascade deletes into the
                # tables that refer to it; the foreign keys are checked again at the end.
                raw.execute("PRAGMA foreign_keys = OFF")
            try:
                connection.execution_options(**{WRITE: True})
                with connection.begin():
                    schema.upgrade(connection)
            finally:
                if sqlite and raw is not None:
                    raw.execute("PRAGMA foreign_keys = ON")

    def in_background(self, work: Callable[[], None], name: str) -> None:
        """Run ``work`` (upkeep such as ANALYZE) on a thread of its own, which
        :meth:`close` waits for, so that no connection outlives the store."""
        thread = threading.Thread(target=work, name=name, daemon=True)
        with self._background_lock:
            self._background = {t for t in self._background if t.is_alive()} | {thread}
        thread.start()

    def close(self) -> None:
        """Close every pooled connection, once background work has ended; the Store must
        not be used afterwards."""
        with self._background_lock:
            running = list(self._background)
        for thread in running:
            thread.join(_BACKGROUND_WAIT)
        self._engine.dispose()

    # Inventory

    def record_facts(
        self,
        certname: str,
        facts: dict[str, Any],
        at: datetime,
        features: Sequence[str] | None = None,
    ) -> None:
        """Store a node's latest facts (and its agent's features), adding it if it is new."""
        self.record_facts_many([(certname, facts, at)], {certname: features})

    def record_facts_many(
        self,
        items: Sequence[tuple[str, dict[str, Any], datetime]],
        features: Mapping[str, Sequence[str] | None] | None = None,
    ) -> None:
        """:meth:`record_facts` for many nodes in one statement (a fleet reconnecting)."""
        features = features or {}
        # Sorted, so that concurrent writers lock rows in one order and cannot deadlock.
        rows = [
            {
                "certname": certname,
                "facts": facts,
                "facts_timestamp": _aware(at),
                "first_seen": at,
                "last_seen": at,
                "features": _sorted_or_none(features.get(certname)),
            }
            for certname, facts, at in sorted(items, key=lambda item: item[0])
        ]
        if rows:
            with self._write() as connection:
                connection.execute(self._upsert_facts, rows)

    def touch_nodes(self, certnames: Sequence[str], at: datetime) -> None:
        """Note that these nodes were seen at ``at``, adding the ones that are new."""
        _aware(at)
        # Sorted, so that concurrent writers lock rows in one order and cannot deadlock.
        rows: list[dict[str, Any]] = [
            {
                "certname": name,
                "facts": {},
                "facts_timestamp": None,
                "first_seen": at,
                "last_seen": at,
                "features": None,
            }
            for name in sorted(set(certnames))
        ]
        if rows:
            with self._write() as connection:
                connection.execute(self._upsert_seen, rows)

    def get_node(self, certname: str) -> NodeRecord:
        """The inventory's record of ``certname``."""
        with self._read() as connection:
            row = connection.execute(select(nodes).where(nodes.c.certname == certname)).first()
        if row is None:
            raise NotFound(
                f"No information is known about node {certname}", details={"certname": certname}
            )
        return queries.node_record(row)

    def list_nodes(self) -> list[NodeRecord]:
        """Every node of the inventory, by certname."""
        with self._read() as connection:
            rows = connection.execute(select(nodes).order_by(nodes.c.certname)).all()
        return [queries.node_record(row) for row in rows]

    def known_certnames(self, certnames: Sequence[str]) -> set[str]:
        """Those of ``certnames`` that the inventory holds (from the primary key alone)."""
        known: set[str] = set()
        with self._read() as connection:
            for chunk in queries.chunks(sorted(set(certnames))):
                query = select(nodes.c.certname).where(nodes.c.certname.in_(chunk))
                known.update(connection.execute(query).scalars())
        return known

    def node_facts(self, certnames: Sequence[str]) -> dict[str, dict[str, Any]]:
        """For those of ``certnames`` that the inventory holds, their facts documents."""
        found: dict[str, dict[str, Any]] = {}
        with self._read() as connection:
            for chunk in queries.chunks(sorted(set(certnames))):
                query = select(nodes.c.certname, nodes.c.facts).where(nodes.c.certname.in_(chunk))
                found.update((name, facts) for name, facts in connection.execute(query))
        return found

    def node_features(self, certnames: Sequence[str]) -> dict[str, list[str] | None]:
        """For those of ``certnames`` that the inventory holds, their agents' features
        (None for a node whose agent never said)."""
        known: dict[str, list[str] | None] = {}
        with self._read() as connection:
            for chunk in queries.chunks(sorted(set(certnames))):
                query = select(nodes.c.certname, nodes.c.features).where(
                    nodes.c.certname.in_(chunk)
                )
                known.update((name, features) for name, features in connection.execute(query))
        return known

    # Jobs

    def create_job(
        self,
        *,
        type: str,
        owner: str,
        environment: str,
        description: str,
        options: dict[str, Any],
        nodes: Sequence[tuple[str, str]],
        at: datetime,
    ) -> int:
        """Store a new job and its nodes, ``(certname, transaction_id)`` pairs, all "new"."""
        _aware(at)
        _check_unique((certname for certname, _ in nodes), "certname")
        _check_unique((transaction_id for _, transaction_id in nodes), "transaction id")
        job = {
            "type": type,
            "state": "new",
            "owner": owner,
            "environment": environment,
            "description": description,
            "options": options,
            "node_count": len(nodes),
            "created_at": at,
        }
        try:
            with self._write() as connection:
                key = connection.execute(insert(jobs), job).inserted_primary_key
                assert key is not None  # an INSERT of one row always has one
                job_id: int = key[0]
                rows = [
                    {"job_id": job_id, "certname": c, "transaction_id": t, "state": "new"}
                    for c, t in nodes
                ]
                if rows:
                    connection.execute(insert(job_nodes), rows)
        except StoreError as error:
            if isinstance(error.__cause__, sa_exc.IntegrityError):
                raise ValidationError(
                    "a transaction id of this job is already used by another job: "
                    "give every node of every job a fresh one"
                ) from error.__cause__
            raise
        return job_id

    def get_job(self, job_id: int) -> JobRecord:
        """The job ``job_id``, with its nodes counted by state."""
        with self._read() as connection:
            row = connection.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise unknown_job(job_id)
            states = queries.node_states(connection, [job_id])
        return queries.job_record(row, states)

    def list_jobs(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        order_by: str = "timestamp",
        order: str = "desc",
        type: str | None = None,
        state: str | None = None,
        owner: str | None = None,
    ) -> tuple[list[JobRecord], int]:
        """A page of jobs and how many match in all (of ``type``, in ``state``, of
        ``owner``, each if given)."""
        column = JOB_ORDERINGS.get(order_by)
        if column is None:
            raise _query_error(
                f"cannot order jobs by {order_by!r}: use one of {', '.join(JOB_ORDERINGS)}",
                "order_by",
            )
        if order not in ("asc", "desc"):
            raise _query_error(f"order must be 'asc' or 'desc', not {order!r}", "order")
        _check_paging(limit, offset)
        direction = asc if order == "asc" else desc
        page = select(jobs).order_by(direction(column), direction(jobs.c.id))
        count = select(func.count()).select_from(jobs)
        for column, wanted in ((jobs.c.type, type), (jobs.c.state, state), (jobs.c.owner, owner)):
            if wanted is not None:
                page = page.where(column == wanted)
                count = count.where(column == wanted)
        with self._read() as connection:
            rows = connection.execute(page.limit(limit).offset(offset)).all()
            total = connection.execute(count).scalar_one()
            states = queries.node_states(connection, [row.id for row in rows])
        return [queries.job_record(row, states) for row in rows], total

    def write_job_changes(
        self,
        nodes: Sequence[NodeUpdate] = (),
        events: Sequence[NewEvent] = (),
        jobs: Sequence[JobUpdate] = (),
    ) -> None:
        """Apply node changes, append events and move jobs, all in one transaction: they
        are stored together or not at all, so writing them again never doubles any."""
        if not (nodes or events or jobs):
            return
        node_rows = self._node_rows(nodes)
        event_rows = self._event_rows(events)
        try:
            with self._write() as connection:
                if node_rows:
                    connection.exec_driver_sql(self._apply_sql, node_rows)
                if event_rows:
                    connection.exec_driver_sql(self._event_sql, event_rows)
                for job in jobs:
                    _move_job(connection, job)
        except StoreError as error:
            if events and isinstance(error.__cause__, sa_exc.IntegrityError):
                self._raise_unknown_job(events, error)
            raise

    def apply_node_updates(self, updates: Sequence[NodeUpdate]) -> None:
        """Apply node changes in order, in one transaction and one statement; an update
        whose transaction id no job knows is ignored."""
        self.write_job_changes(nodes=updates)

    def add_events(self, events: Sequence[NewEvent]) -> None:
        """Append events to their jobs' logs, in order."""
        self.write_job_changes(events=events)

    def set_job_state(self, update: JobUpdate) -> None:
        """Move one job (see :class:`JobUpdate`)."""
        self.write_job_changes(jobs=[update])

    def _node_rows(self, updates: Sequence[NodeUpdate]) -> list[Any]:
        # This is the hot path of a large job, so values are converted here, once per
        # distinct timestamp, and handed to the driver's executemany directly: going
        # through SQLAlchemy's per-row parameter processing would triple the time.
        sqlite = self.dialect == "sqlite"
        stamps: dict[datetime, datetime | str] = {}

        def stamp(at: datetime | None) -> datetime | str | None:
            if at is None:
                return None
            value = stamps.get(at)
            if value is None:
                value = stamps[at] = _driver_timestamp(at, sqlite=sqlite)
            return value

        names = self._apply_names  # the driver's parameter order, if positional
        rows: list[Any] = []
        # Sorted by transaction id (stably, so one node's updates keep their order):
        # concurrent batches then lock rows in the same order and cannot deadlock.
        for u in sorted(updates, key=lambda u: u.transaction_id):
            row = {
                "p_transaction_id": u.transaction_id,
                "p_state": u.state,
                "p_started": stamp(u.started_at),
                "p_finished": stamp(u.finished_at),
                "p_result": None if u.result is None else json_dumps(u.result),
                "p_message": u.message,
                "p_give_up": stamp(u.give_up_at),
            }
            rows.append(row if names is None else tuple(row[n] for n in names))
        return rows

    def _event_rows(self, events: Sequence[NewEvent]) -> list[Any]:
        # The hot path of a large job too: values converted here, as above.
        sqlite = self.dialect == "sqlite"
        names = self._event_names
        rows: list[Any] = []
        stamps: dict[datetime, datetime | str] = {}  # events of one flush share a few
        for e in events:
            stamp = stamps.get(e.timestamp)
            if stamp is None:
                stamp = stamps[e.timestamp] = _driver_timestamp(
                    _aware(e.timestamp, "timestamp"), sqlite=sqlite
                )
            row = {
                "p_job_id": e.job_id,
                "p_type": e.type,
                "p_certname": e.certname,
                "p_timestamp": stamp,
                "p_message": e.message,
                "p_details": json_dumps(e.details),
            }
            rows.append(row if names is None else tuple(row[n] for n in names))
        return rows

    def _raise_unknown_job(self, events: Sequence[NewEvent], error: StoreError) -> None:
        wanted = {e.job_id for e in events}
        with self._read() as connection:
            found = set(
                connection.execute(select(jobs.c.id).where(jobs.c.id.in_(wanted))).scalars()
            )
        missing = sorted(wanted - found)
        if missing:
            raise unknown_job(missing[0]) from error.__cause__

    def job_nodes(
        self, job_id: int, *, state: str | None = None, limit: int | None = None, offset: int = 0
    ) -> tuple[list[JobNodeRecord], int]:
        """A page of a job's nodes by certname, and how many match ``state`` in all."""
        _check_paging(limit, offset)
        page = select(job_nodes).where(job_nodes.c.job_id == job_id)
        count = select(func.count()).select_from(job_nodes).where(job_nodes.c.job_id == job_id)
        if state is not None:
            page = page.where(job_nodes.c.state == state)
            count = count.where(job_nodes.c.state == state)
        page = page.order_by(job_nodes.c.certname).limit(limit).offset(offset)
        with self._read() as connection:
            self._require_job(connection, job_id)
            rows = connection.execute(page).all()
            total = connection.execute(count).scalar_one()
        return [queries.job_node_record(row) for row in rows], total

    def job_report(self, job_id: int) -> tuple[list[JobNodeRecord], dict[str, list[int]]]:
        """A job's nodes by certname, and the ids of each node's events."""
        nodes_query = (
            select(job_nodes).where(job_nodes.c.job_id == job_id).order_by(job_nodes.c.certname)
        )
        events_query = (
            select(job_events.c.certname, job_events.c.id)
            .where(job_events.c.job_id == job_id, job_events.c.certname.is_not(None))
            .order_by(job_events.c.id)
        )
        events: dict[str, list[int]] = {}
        with self._read() as connection:
            self._require_job(connection, job_id)
            rows = connection.execute(nodes_query).all()
            for certname, event_id in connection.execute(events_query):
                events.setdefault(certname, []).append(event_id)
        return [queries.job_node_record(row) for row in rows], events

    def node_by_transaction(self, transaction_id: str) -> JobNodeRecord | None:
        """The job node that ``transaction_id`` was given to, if any."""
        query = select(job_nodes).where(job_nodes.c.transaction_id == transaction_id)
        with self._read() as connection:
            row = connection.execute(query).first()
        return None if row is None else queries.job_node_record(row)

    def job_events(self, job_id: int, *, start: int = 0, limit: int = 1000) -> list[EventRecord]:
        """A job's events from id ``start`` on, oldest first."""
        _check_paging(limit, 0)
        query = (
            select(job_events)
            .where(job_events.c.job_id == job_id, job_events.c.id >= start)
            .order_by(job_events.c.id)
            .limit(limit)
        )
        with self._read() as connection:
            self._require_job(connection, job_id)
            rows = connection.execute(query).all()
        return [queries.event_record(row) for row in rows]

    def purge_jobs(self, *, finished_before: datetime) -> int:
        """Delete jobs that ended before ``finished_before``, with their nodes and events;
        returns how many. Unfinished jobs are never deleted."""
        cutoff = _aware(finished_before, "finished_before")
        old = select(jobs.c.id).where(
            jobs.c.state.in_(TERMINAL_JOB_STATES), jobs.c.finished_at < cutoff
        )
        with self._write() as connection:
            ids = list(connection.execute(old).scalars())
            for start in range(0, len(ids), queries.CHUNK):
                some = ids[start : start + queries.CHUNK]
                connection.execute(delete(job_events).where(job_events.c.job_id.in_(some)))
                connection.execute(delete(job_nodes).where(job_nodes.c.job_id.in_(some)))
                connection.execute(delete(jobs).where(jobs.c.id.in_(some)))
        return len(ids)

    def unfinished_jobs(self) -> list[JobRecord]:
        """Jobs not yet in a terminal state, oldest first: what to resume after a restart."""
        query = select(jobs).where(jobs.c.state.not_in(TERMINAL_JOB_STATES)).order_by(jobs.c.id)
        with self._read() as connection:
            rows = connection.execute(query).all()
            states = queries.node_states(connection, [row.id for row in rows])
        return [queries.job_record(row, states) for row in rows]

    def unfinished_nodes(self, job_id: int) -> list[JobNodeRecord]:
        """A job's nodes not yet in a terminal state, by certname; none for an unknown job."""
        query = (
            select(job_nodes)
            .where(job_nodes.c.job_id == job_id, job_nodes.c.state.not_in(TERMINAL_NODE_STATES))
            .order_by(job_nodes.c.certname)
        )
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [queries.job_node_record(row) for row in rows]

    # Plumbing

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translated_errors(self.url), self._engine.begin() as connection:
            yield connection

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with translated_errors(self.url), self._writer.begin() as connection:
            yield connection

    @staticmethod
    def _require_job(connection: Connection, job_id: int) -> None:
        if connection.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
            raise unknown_job(job_id)


def _sorted_or_none(features: Sequence[str] | None) -> list[str] | None:
    return None if features is None else sorted(set(features))


def unknown_job(job_id: int) -> NotFound:
    """The error for a job id that names no job, as the orchestrator API reports it."""
    return NotFound(
        f"No job exists with id {job_id}", kind=f"{_NS}/unknown-job", details={"id": job_id}
    )


def _query_error(msg: str, parameter: str) -> ValidationError:
    return ValidationError(msg, kind=f"{_NS}/query-error", details={"parameter": parameter})


def _check_paging(limit: int | None, offset: int) -> None:
    if limit is not None and limit < 0:
        raise _query_error(f"limit must be 0 or more, not {limit}", "limit")
    if offset < 0:
        raise _query_error(f"offset must be 0 or more, not {offset}", "offset")


def _check_unique(values: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValidationError(f"{what} {value!r} appears twice in one job: list it once")
        seen.add(value)


def _aware(at: datetime, name: str = "at") -> datetime:
    if at.utcoffset() is None:
        raise ValidationError(
            f"{name} {at.isoformat()} has no time zone: pass an aware datetime, "
            "such as datetime.now(UTC)"
        )
    return at


def _driver_timestamp(at: datetime, *, sqlite: bool) -> datetime | str:
    """``at`` as the driver takes it; for SQLite, the text UTCDateTime would store."""
    utc = _aware(at).astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else utc


def _move_job(connection: Connection, job: JobUpdate) -> None:
    values: dict[str, Any] = {"state": job.state}
    if job.started_at is not None:
        values["started_at"] = func.coalesce(
            jobs.c.started_at, bindparam("at", _aware(job.started_at), UTCDateTime())
        )
    if job.finished_at is not None:
        values["finished_at"] = _aware(job.finished_at)
    changed = connection.execute(update(jobs).where(jobs.c.id == job.job_id).values(values))
    if changed.rowcount == 0:
        raise unknown_job(job.job_id)
