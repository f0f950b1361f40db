"""What the store hands out and takes in: frozen records, free of SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINAL_JOB_STATES = frozenset({"stopped", "finished", "failed"})
TERMINAL_NODE_STATES = frozenset({"finished", "failed", "errored", "skipped"})


@dataclass(frozen=True)
class JobRecord:
    """A job as stored, with how many of its nodes are in each state."""

    id: int
    type: str
    state: str
    owner: str
    environment: str
    description: str
    options: dict[str, Any]
    node_count: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    node_states: dict[str, int]  # only states that at least one node is in


@dataclass(frozen=True)
class JobNodeRecord:
    """One node's part in a job."""

    job_id: int
    certname: str
    transaction_id: str
    state: str
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    message: str | None
    give_up_at: datetime | None = None  # disconnected: given up then unless it reconnects


@dataclass(frozen=True)
class EventRecord:
    """An entry of a job's event log; ``id`` grows with every event of every job."""

    id: int
    job_id: int
    type: str
    certname: str | None
    timestamp: datetime
    message: str
    details: dict[str, Any]


@dataclass(frozen=True)
class NodeRecord:
    """A node of the inventory: its latest facts and when it was last heard of."""

    certname: str
    facts: dict[str, Any]
    facts_timestamp: datetime | None
    first_seen: datetime
    last_seen: datetime
    features: list[str] | None = None
    deactivated: datetime | None = None  # when it left query results (history kept)


@dataclass(frozen=True)
class NodeUpdate:
    """One node's change, found by its transaction id; the job core decides every value.

    ``started_at`` is kept once set; ``finished_at``, ``result`` and ``message`` replace
    the stored ones when given and leave them alone when ``None``; ``give_up_at`` is
    always written (``None`` clears it).
    """

    transaction_id: str
    state: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    message: str | None = None
    give_up_at: datetime | None = None


@dataclass(frozen=True)
class JobUpdate:
    """A job's new state; ``started_at`` is kept once set, ``finished_at`` replaces."""

    job_id: int
    state: str
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class NewEvent:
    """An event to append to a job's log."""

    job_id: int
    type: str
    timestamp: datetime
    certname: str | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
