"""The statements the Store runs more than once, and how their rows become records."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Insert, Integer, Row, Text, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from podium.store.records import EventRecord, JobNodeRecord, JobRecord, NodeRecord
from podium.store.tables import JSONDocument, UTCDateTime, job_events, job_nodes, jobs, nodes

# Columns GET /jobs may sort on, by the names the API uses.
JOB_ORDERINGS = {
    "owner": jobs.c.owner,
    "timestamp": jobs.c.created_at,
    "environment": jobs.c.environment,
    "name": jobs.c.description,
    "state": jobs.c.state,
}

# Large enough to keep statements few, small enough for any database's parameter limit.
CHUNK = 1000

# One node's update; the COALESCEs keep what an update does not set. The Store compiles
# it once to its database's SQL and hands that to the driver's executemany.
APPLY_NODE_UPDATE = (
    update(job_nodes)
    .where(job_nodes.c.transaction_id == bindparam("p_transaction_id"))
    .values(
        state=bindparam("p_state"),
        started_at=func.coalesce(
            job_nodes.c.started_at, bindparam("p_started", type_=UTCDateTime())
        ),
        finished_at=func.coalesce(
            bindparam("p_finished", type_=UTCDateTime()), job_nodes.c.finished_at
        ),
        result=func.coalesce(bindparam("p_result", type_=JSONDocument), job_nodes.c.result),
        message=func.coalesce(bindparam("p_message", type_=Text()), job_nodes.c.message),
        give_up_at=bindparam("p_give_up", type_=UTCDateTime()),
    )
)


# One event; compiled once and handed to the driver's executemany like the above.
INSERT_EVENT = insert(job_events).values(
    job_id=bindparam("p_job_id", type_=Integer()),
    type=bindparam("p_type", type_=Text()),
    certname=bindparam("p_certname", type_=Text()),
    timestamp=bindparam("p_timestamp", type_=UTCDateTime()),
    message=bindparam("p_message", type_=Text()),
    details=bindparam("p_details", type_=JSONDocument),
)


def upsert_node(dialect: str, columns: Iterable[str]) -> Insert:
    """INSERT INTO nodes that updates ``columns`` of a node already there."""
    if dialect == "postgresql":
        pg = postgresql_insert(nodes)
        return pg.on_conflict_do_update(
            index_elements=[nodes.c.certname], set_={c: pg.excluded[c] for c in columns}
        )
    lite = sqlite_insert(nodes)
    return lite.on_conflict_do_update(
        index_elements=[nodes.c.certname], set_={c: lite.excluded[c] for c in columns}
    )


def chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def node_states(connection: Connection, job_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """For each job, how many of its nodes are in each state (states with none left out)."""
    states: dict[int, dict[str, int]] = {job_id: {} for job_id in job_ids}
    for start in range(0, len(job_ids), CHUNK):
        query = (
            select(job_nodes.c.job_id, job_nodes.c.state, func.count())
            .where(job_nodes.c.job_id.in_(job_ids[start : start + CHUNK]))
            .group_by(job_nodes.c.job_id, job_nodes.c.state)
        )
        for job_id, state, count in connection.execute(query):
            states[job_id][state] = count
    return states


def job_record(row: Row[Any], states: dict[int, dict[str, int]]) -> JobRecord:
    return JobRecord(
        id=row.id,
        type=row.type,
        state=row.state,
        owner=row.owner,
        environment=row.environment,
        description=row.description,
        options=row.options,
        node_count=row.node_count,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        node_states=states.get(row.id, {}),
    )


def job_node_record(row: Row[Any]) -> JobNodeRecord:
    return JobNodeRecord(
        job_id=row.job_id,
        certname=row.certname,
        transaction_id=row.transaction_id,
        state=row.state,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result=row.result,
        message=row.message,
        give_up_at=row.give_up_at,
    )


def event_record(row: Row[Any]) -> EventRecord:
    return EventRecord(
        id=row.id,
        job_id=row.job_id,
        type=row.type,
        certname=row.certname,
        timestamp=row.timestamp,
        message=row.message,
        details=row.details,
    )


def node_record(row: Row[Any]) -> NodeRecord:
    return NodeRecord(
        certname=row.certname,
        facts=row.facts,
        facts_timestamp=row.facts_timestamp,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        features=row.features,
    )
