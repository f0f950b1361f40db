"""The event loop for the server and the broker: uvloop where it is available.

Besides speed, uvloop's TLS transport keeps ~40 KB per idle connection where asyncio's
allocates a 256 KiB buffer for each, which is what lets one broker hold a large fleet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - e.g. on platforms uvloop does not support
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Like :func:`asyncio.run`, on :func:`new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
