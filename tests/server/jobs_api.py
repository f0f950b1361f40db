"""Driving jobs through the API in tests: submitting, reading nodes and events, the
service's clock, and a runtime with settings of its own."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings
from waiting import DEADLINE, until

from .conftest import api_client
from .fleet import FakeAgent

FINAL_EVENTS = frozenset({"node_finished", "node_failed", "node_errored", "node_skipped"})


def task_body(nodes: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "task": "podium::echo",
        "params": {"message": "hi"},
        "scope": {"nodes": nodes},
        **extra,
    }


async def submit(api: httpx.AsyncClient, body: dict[str, Any]) -> int:
    """Start a job; its id."""
    response = await api.post("/command/task", json=body)
    assert response.status_code == 202, response.text
    return int(response.json()["job"]["name"])


async def ended(api: httpx.AsyncClient, runtime: Runtime, job_id: int) -> dict[str, Any]:
    """The job, once it has ended and is stored."""
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    return await job_of(api, job_id)


async def job_of(api: httpx.AsyncClient, job_id: int) -> dict[str, Any]:
    response = await api.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


async def nodes_of(api: httpx.AsyncClient, job_id: int) -> dict[str, dict[str, Any]]:
    items = (await api.get(f"/jobs/{job_id}/nodes")).json()["items"]
    return {n["name"]: n for n in items}


async def states_of(api: httpx.AsyncClient, job_id: int) -> dict[str, str]:
    return {name: node["state"] for name, node in (await nodes_of(api, job_id)).items()}


async def events_of(api: httpx.AsyncClient, job_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await api.get(f"/jobs/{job_id}/events")).json()["items"]
    return items


def types_of(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def until_running(api: httpx.AsyncClient, job_id: int, count: int) -> None:
    """Until at least ``count`` of the job's nodes show as running."""

    async def enough() -> bool:
        return list((await states_of(api, job_id)).values()).count("running") >= count

    await until(enough, what=f"{count} nodes of job {job_id} to run")


def sent(agents: Iterable[FakeAgent]) -> int:
    """How many task requests the agents have received in all."""
    return sum(len(a.requests) for a in agents)


def most_running_at_once(events: Iterable[dict[str, Any]]) -> int:
    """From a job's event log: the most nodes that were between their ``node_running``
    and their final event at any point."""
    running: set[str] = set()
    most = 0
    for event in events:
        node = event["details"].get("node")
        if event["type"] == "node_running":
            running.add(node)
            most = max(most, len(running))
        elif event["type"] in FINAL_EVENTS:
            running.discard(node)
    return most


class FakeClock:
    """The job service's time, moved by the test; see :func:`advance`."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def use_clock(runtime: Runtime) -> FakeClock:
    """Give ``runtime``'s job service a clock that moves only when the test says."""
    clock = FakeClock()
    runtime.jobs.clock = clock
    return clock


async def advance(runtime: Runtime, clock: FakeClock, seconds: float) -> None:
    """Move the clock on and fire the core's timers that are then due; stored after."""
    clock.now += seconds
    runtime.jobs._on_timer()
    await runtime.jobs.flush()


def set_limits(runtime: Runtime, **changes: Any) -> None:
    """Change the job core's server-wide limits (e.g. a grace period short enough to wait
    out) in a runtime already started."""
    core = runtime.jobs.core
    core.limits = dataclasses.replace(core.limits, **changes)


@asynccontextmanager
async def runtime_with(
    settings: ServerSettings, **changes: Any
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A runtime of its own on ``settings`` with ``changes``, and an API client of it
    (for a test that does not take the ``runtime`` fixture: they would share a database)."""
    runtime = Runtime(dataclasses.replace(settings, **changes))
    await runtime.start()
    try:
        async with api_client(runtime) as client:
            yield runtime, client
    finally:
        await runtime.stop()
