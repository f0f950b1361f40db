"""Fixtures for the end-to-end tests: real server and agent processes on loopback.

``fleet`` is one server with five agents on SQLite, shared by the whole folder; a test
that disturbs an agent (kills, revokes or impersonates it) starts one of its own. Tests
that disturb the server, or need PostgreSQL, start a private installation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from e2e.installation import NODES, Installation, start_installation


@pytest.fixture(scope="package", autouse=True)
def _no_podium_environment() -> Iterator[None]:
    """Processes take their settings from their flags, never from the caller's
    ``PODIUM_*`` variables (a ``PODIUM_BROKERS`` would detach the server's broker)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("PODIUM_") and not name.startswith("PODIUM_TEST_"):
                patch.delenv(name)
        yield


@pytest.fixture(scope="package")
def fleet() -> Iterator[Installation]:
    """One server and the five agents of ``NODES`` on SQLite, left as they were found."""
    with start_installation(NODES) as installation:
        yield installation
