"""Job and node states, and the rules that move between them (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from podium.store.records import TERMINAL_JOB_STATES, TERMINAL_NODE_STATES

__all__ = [
    "JOB_STATES",
    "NODE_EVENTS",
    "NODE_STATES",
    "TERMINAL_JOB_STATES",
    "TERMINAL_NODE_STATES",
    "can_move",
    "job_outcome",
    "state_for_results",
]

JOB_STATES = ("new", "ready", "running", "stopping", "stopped", "finished", "failed")
NODE_STATES = ("new", "running", "finished", "failed", "errored", "skipped")

NODE_EVENTS = {
    "running": "node_running",
    "finished": "node_finished",
    "failed": "node_failed",
    "errored": "node_errored",
    "skipped": "node_skipped",
}

# Which node state may follow which: a final state is final, a late provisional
# response never moves a node back to running.
_NEXT: dict[str, frozenset[str]] = {
    "new": frozenset({"running", *TERMINAL_NODE_STATES}),
    "running": TERMINAL_NODE_STATES,
}


def can_move(current: str, new: str) -> bool:
    return new in _NEXT.get(current, frozenset())


def state_for_results(results: dict[str, Any]) -> str:
    """A task's final results: ``failed`` when they carry ``_error`` (Bolt's rule)."""
    return "failed" if "_error" in results else "finished"


def job_outcome(node_states: Iterable[str]) -> str:
    """The final state of a job whose nodes all reached these states."""
    states = list(node_states)
    if any(s in ("failed", "errored") for s in states):
        return "failed"
    return "finished"
