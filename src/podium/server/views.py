"""Stored records in the orchestrator API's JSON shapes (pure), and the shape of errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from podium.store import EventRecord, JobNodeRecord, JobRecord


class ErrorBody(BaseModel):
    """What every error of the API is: a kind, a sentence, and details by kind."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    msg: str
    details: dict[str, Any]


# A router's ``responses``: its routes document their errors (in place of FastAPI's 422,
# which the API never answers: invalid input is a 400 like any other).
ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    "4XX": {"model": ErrorBody, "description": "The request cannot be done as it is"}
}


def timestamp(value: datetime | None) -> str | None:
    """An API timestamp: ISO 8601 in UTC with a Z."""
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def job(record: JobRecord, base: str) -> dict[str, Any]:
    url = f"{base}/jobs/{record.id}"
    last = record.finished_at or record.started_at or record.created_at
    return {
        "id": url,
        "name": str(record.id),
        "state": record.state,
        "command": record.type,
        "type": record.type,
        "options": {k: v for k, v in record.options.items() if not k.startswith("_")},
        "owner": {"login": record.owner},
        "description": record.description,
        "environment": {"name": record.environment},
        "node_count": record.node_count,
        "node_states": record.node_states,
        "timestamp": timestamp(last),
        "created_timestamp": timestamp(record.created_at),
        "started_timestamp": timestamp(record.started_at),
        "finished_timestamp": timestamp(record.finished_at),
        "duration": _duration(record.started_at or record.created_at, record.finished_at),
        "nodes": {"id": f"{url}/nodes"},
        "events": {"id": f"{url}/events"},
    }


def job_node(record: JobNodeRecord) -> dict[str, Any]:
    return {
        "name": record.certname,
        "state": record.state,
        "transaction_id": record.transaction_id,
        "start_timestamp": timestamp(record.started_at),
        "finish_timestamp": timestamp(record.finished_at),
        "duration": _duration(record.started_at, record.finished_at),
        "timestamp": timestamp(record.finished_at or record.started_at),
        "result": record.result,
        "details": {"message": record.message} if record.message else {},
        # The agent dropped during the run: the node is given up on then unless it is back.
        "disconnected": (
            {"give_up_at": timestamp(record.give_up_at)} if record.give_up_at else None
        ),
    }


def event(record: EventRecord) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "type": record.type,
        "timestamp": timestamp(record.timestamp),
        "details": record.details,
        "message": record.message,
    }
