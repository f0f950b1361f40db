"""Job and node state names, and what a task's result means (pure).

Which state follows which is the job core's (:mod:`podium.jobs.core`); these are the
names it and the API share.
"""

from __future__ import annotations

from typing import Any

from podium.store.records import TERMINAL_JOB_STATES, TERMINAL_NODE_STATES

__all__ = [
    "JOB_STATES",
    "NODE_EVENTS",
    "NODE_STATES",
    "TERMINAL_JOB_STATES",
    "TERMINAL_NODE_STATES",
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


def state_for_results(results: dict[str, Any]) -> str:
    """A task's final results: ``failed`` when they carry ``_error`` (Bolt's rule)."""
    return "failed" if "_error" in results else "finished"
