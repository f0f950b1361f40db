"""Waiting for a condition with a deadline, never for a fixed time.

``until`` is for coroutine tests, ``wait_for`` for tests that drive real processes.
Both check the condition first and then poll it; the deadline is generous so that a
loaded machine makes a test slower, never failed. For ``until``, a condition that
raises ``OSError`` (a file not written yet) is not met yet.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

DEADLINE = 30.0  # seconds; a timeout is a failure, so it only bounds a hung test
POLL = 0.01


async def until(
    condition: Callable[[], object | Awaitable[object]],
    *,
    within: float = DEADLINE,
    what: str | None = None,
) -> None:
    """Until ``condition()`` (which may be a coroutine function) is truthy; fail after
    ``within`` seconds naming ``what``."""
    deadline = time.monotonic() + within
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except OSError:
            value = False
        if value:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {within:.0f} s: {what or condition}")
        await asyncio.sleep(POLL)


def wait_for(what: str, probe: Callable[[], T], *, timeout: float = DEADLINE) -> T:
    """Poll ``probe`` until it returns something truthy, and return that; fail naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return value
