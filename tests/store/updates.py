"""Node updates as the job core writes them, for tests that only care about the state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from podium.store import TERMINAL_NODE_STATES, NodeUpdate


def moved(transaction_id: str, state: str, at: datetime, **fields: Any) -> NodeUpdate:
    """A node moving to ``state`` at ``at``: "running" starts it then; a final state
    ends it then, and starts it then too if it never ran (the store keeps a start once
    set, so a node that did run keeps its own)."""
    final = state in TERMINAL_NODE_STATES
    return NodeUpdate(
        transaction_id,
        state,
        started_at=at if final or state == "running" else None,
        finished_at=at if final else None,
        **fields,
    )
