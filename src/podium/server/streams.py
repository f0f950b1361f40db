"""A job's events as Server-Sent Events: what the CLI and the console follow live.

The stream reads the job's events from the store from a given id on, then waits for the
job service to say that new ones were stored (or a keepalive interval, which also picks
up events stored by another server process), and ends after the job's ``job_finished``.
A client that reconnects sends ``Last-Event-ID`` and misses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from fastapi import Request

from podium.server import views
from podium.server.runtime import Runtime
from podium.store import TERMINAL_JOB_STATES, EventRecord

KEEPALIVE = 10.0  # seconds between comment lines on a quiet stream
_PAGE = 1000


def sse(event: EventRecord) -> bytes:
    """One event in the text/event-stream format."""
    data = orjson.dumps(views.event(event))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.type.encode(), data)


async def events_stream(
    runtime: Runtime, request: Request, job_id: int, first: int, *, keepalive: float = KEEPALIVE
) -> AsyncIterator[bytes]:
    store = runtime.store
    start = first
    yield b"retry: 1000\n\n"
    stored: asyncio.Event | None = None
    ending = False
    try:
        while True:
            # Taken before reading, so that no wake-up between the two is missed.
            stored = runtime.jobs.events_stored(job_id)
            events = await asyncio.to_thread(store.job_events, job_id, start=start, limit=_PAGE)
            if events:
                yield b"".join(sse(e) for e in events)
                start = events[-1].id + 1
                if any(e.type == "job_finished" for e in events):
                    return
                if len(events) == _PAGE:
                    continue
            if ending:
                return  # the job had ended, and what it stored until then has been sent
            # A job this server runs is not over; any other may have ended before the
            # events asked for (or have only late results after its job_finished).
            if runtime.jobs.core.job_state(job_id) is None:
                job = await asyncio.to_thread(store.get_job, job_id)
                if job.state in TERMINAL_JOB_STATES:
                    ending = True  # read once more: its last events may be just stored
                    continue
            if await request.is_disconnected():
                return
            try:
                async with asyncio.timeout(keepalive):
                    await stored.wait()
            except TimeoutError:
                yield b": keepalive\n\n"
    finally:
        if stored is not None:
            runtime.jobs.forget(job_id, stored)
