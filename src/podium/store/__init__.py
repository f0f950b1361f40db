"""Storage: jobs, their nodes and events, and the node inventory, in SQLite or PostgreSQL.

SQLAlchemy Core over a synchronous, thread-safe engine; the schema comes from the
Alembic migrations in ``migrations/``, applied by :meth:`Store.migrate`.

    store = Store("sqlite:////var/lib/podium/podium.db")
    store.migrate()
    job_id = store.create_job(type="task", ..., nodes=[(certname, transaction_id)], at=now)
"""

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
from podium.store.repository import Store

__all__ = [
    "JOB_ORDERINGS",
    "TERMINAL_JOB_STATES",
    "TERMINAL_NODE_STATES",
    "EventRecord",
    "JobNodeRecord",
    "JobRecord",
    "JobUpdate",
    "NewEvent",
    "NodeRecord",
    "NodeUpdate",
    "Store",
]
