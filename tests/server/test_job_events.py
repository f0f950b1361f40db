"""Reading jobs back: the event stream (Server-Sent Events), the per-node report, and
the job list's filters.

The live stream is read from a real server on a loopback port: the in-process ASGI
transport hands a response over only once it is complete.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from access import admin_token
from podium.server.app import create_app
from podium.server.runtime import Runtime
from podium.server.streams import events_stream
from waiting import DEADLINE, until

from .fleet import FakeAgent, fail, hold
from .jobs_api import ended, events_of, set_limits, submit, task_body, types_of, until_running

SSE = {"Accept": "text/event-stream"}


@pytest.fixture
async def served(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``runtime``'s API served by uvicorn on 127.0.0.1 (plain HTTP)."""
    config = uvicorn.Config(
        create_app(runtime),
        host="127.0.0.1",
        port=0,
        lifespan="off",  # the fixture started the runtime
        ws="none",
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await until(lambda: server.started or serving.done(), what="the API server to listen")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}/orchestrator/v1",
            headers={"X-Authentication": admin_token(runtime)},
            timeout=DEADLINE,
        ) as client:
            yield client
    finally:
        server.should_exit = True
        await serving


@dataclass
class Sse:
    id: str | None
    event: str | None
    data: dict[str, Any]


class Reader:
    """Events of a text/event-stream response, one at a time, as a browser reads them."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith("text/event-stream")
        self._lines = response.aiter_lines()

    async def next(self) -> Sse | None:
        """The next event; None once the stream has ended."""
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields:
                    return Sse(fields.get("id"), fields.get("event"), json.loads(fields["data"]))
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        return None

    async def rest(self) -> list[Sse]:
        out = []
        while (event := await self.next()) is not None:
            out.append(event)
        return out


def check_shape(events: list[Sse]) -> None:
    """Each event's id and type are those of its data, and ids only grow."""
    for event in events:
        assert event.id == event.data["id"]
        assert event.event == event.data["type"]
    ids = [int(e.id or 0) for e in events]
    assert ids == sorted(set(ids))


async def test_the_event_stream_follows_a_job_live_and_ends_after_job_finished(served, runtime):
    agent = FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(served, task_body(["web-01"]))
    async with served.stream("GET", f"/jobs/{job_id}/events", headers=SSE) as response:
        assert response.headers["cache-control"] == "no-store"
        reader = Reader(response)
        seen = [await reader.next(), await reader.next()]
        assert [e.event for e in seen if e] == ["job_running", "node_running"]
        # The job is still running: what comes next is told as it happens.
        agent.complete({"_output": "done\n"})
        events = [e for e in seen if e] + await reader.rest()
    assert [e.event for e in events] == [
        "job_running",
        "node_running",
        "node_finished",
        "job_finished",
    ]
    check_shape(events)
    assert events[2].data["details"]["result"] == {"_output": "done\n"}
    # The same events, in the same shape, as the JSON pages give them.
    assert [e.data for e in events] == await events_of(served, job_id)


async def test_the_stream_resumes_after_last_event_id_with_only_later_events(api, runtime):
    FakeAgent(runtime.broker, "web-01")
    FakeAgent(runtime.broker, "web-02", fail)
    job = await ended(api, runtime, await submit(api, task_body(["web-01", "web-02"])))
    stored = await events_of(api, int(job["name"]))
    assert len(stored) == 6  # job_running, 2 x node_running, 2 x final, job_finished
    path = f"/jobs/{job['name']}/events"

    async with api.stream("GET", path, headers=SSE) as response:
        everything = await Reader(response).rest()
    check_shape(everything)
    assert [e.data for e in everything] == stored

    after = stored[2]["id"]
    headers = {**SSE, "Last-Event-ID": after}
    async with api.stream("GET", path, headers=headers) as response:
        later = await Reader(response).rest()
    assert [e.data for e in later] == stored[3:]

    # From the last event on there is nothing more: the stream ends at once.
    headers = {**SSE, "Last-Event-ID": stored[-1]["id"]}
    async with api.stream("GET", path, headers=headers) as response:
        assert await Reader(response).rest() == []

    # Without Last-Event-ID, ?start= says where to begin, as for the JSON pages.
    async with api.stream("GET", path, headers=SSE, params={"start": after}) as response:
        assert [e.data for e in await Reader(response).rest()] == stored[2:]


async def test_the_stream_picks_up_a_running_job_after_last_event_id(served, runtime):
    agent = FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(served, task_body(["web-01"]))
    async with served.stream("GET", f"/jobs/{job_id}/events", headers=SSE) as response:
        reader = Reader(response)
        first = [await reader.next(), await reader.next()]
    # The client went away after node_running; it comes back while the job runs.
    last = first[-1]
    assert last is not None and last.event == "node_running"
    headers = {**SSE, "Last-Event-ID": last.id or ""}
    async with served.stream("GET", f"/jobs/{job_id}/events", headers=headers) as response:
        reader = Reader(response)
        agent.complete()
        rest = await reader.rest()
    assert [e.event for e in rest] == ["node_finished", "job_finished"]
    assert int(rest[0].id or 0) > int(last.id or 0)


async def test_a_last_event_id_that_is_not_an_id_is_refused(api, runtime):
    FakeAgent(runtime.broker, "web-01")
    job = await ended(api, runtime, await submit(api, task_body(["web-01"])))
    response = await api.get(
        f"/jobs/{job['name']}/events", headers={**SSE, "Last-Event-ID": "yesterday"}
    )
    assert response.status_code == 400
    payload = response.json()
    assert set(payload) == {"kind", "msg", "details"}
    assert payload["kind"] == "puppetlabs.orchestrator/validation-error"


async def test_the_stream_of_an_unknown_job_is_404(api):
    response = await api.get("/jobs/999/events", headers=SSE)
    assert response.status_code == 404
    assert response.json()["kind"] == "puppetlabs.orchestrator/unknown-job"


# The stream's own loop, driven directly: with a keepalive longer than any test, a
# stream that waits when it should not never ends (and the test fails at its deadline).

QUIET = 3600.0


class Listening:
    """The request of a client that stays connected."""

    async def is_disconnected(self) -> bool:
        return False


async def stream_of(runtime: Runtime, job_id: int, first: int = 0) -> AsyncIterator[bytes]:
    return events_stream(runtime, Listening(), job_id, first, keepalive=QUIET)  # type: ignore[arg-type]


async def everything(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


def ids_in(chunks: list[bytes]) -> list[str]:
    return [
        line.removeprefix(b"id: ").decode()
        for chunk in chunks
        for line in chunk.splitlines()
        if line.startswith(b"id: ")
    ]


async def test_a_finished_jobs_stream_ends_even_with_events_after_job_finished(api, runtime):
    set_limits(runtime, reconnect_grace=0.05)
    agent = FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(api, task_body(["web-01"]))
    await until_running(api, job_id, 1)
    agent.disconnect()
    await ended(api, runtime, job_id)  # given up on: errored
    agent.connect()
    agent.complete()  # its result, late: logged after job_finished
    await runtime.jobs.flush()
    events = await events_of(api, job_id)
    assert types_of(events)[-2:] == ["job_finished", "node_finished"]

    # A client that saw job_finished and comes back gets the late event, and the end.
    stream = await stream_of(runtime, job_id, int(events[-2]["id"]) + 1)
    chunks = await asyncio.wait_for(everything(stream), DEADLINE)
    assert ids_in(chunks) == [events[-1]["id"]]


async def test_a_stream_that_ends_does_not_leave_another_one_on_the_job_unwoken(api, runtime):
    agent = FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(api, task_body(["web-01"]))
    await until_running(api, job_id, 1)
    await runtime.jobs.flush()
    leaving, staying = await stream_of(runtime, job_id), await stream_of(runtime, job_id)
    for stream in (leaving, staying):
        assert await anext(stream) == b"retry: 1000\n\n"
        assert len(ids_in([await anext(stream)])) == 2  # job_running, node_running
    # Both wait for what comes next; one client goes away meanwhile.
    waiting = asyncio.ensure_future(anext(staying))
    await leaving.aclose()
    agent.complete()
    chunk = await asyncio.wait_for(waiting, DEADLINE)
    assert ids_in([chunk]) == [e["id"] for e in (await events_of(api, job_id))[2:]]
    await staying.aclose()


# The report


async def test_the_report_gives_each_node_its_state_and_its_events(api, runtime):
    FakeAgent(runtime.broker, "web-02")
    FakeAgent(runtime.broker, "web-01", fail)
    job = await ended(api, runtime, await submit(api, task_body(["web-02", "web-01", "ghost"])))
    events = await events_of(api, int(job["name"]))
    report = (await api.get(f"/jobs/{job['name']}/report")).json()
    assert [(i["node"], i["state"]) for i in report["items"]] == [
        ("ghost", "failed"),
        ("web-01", "failed"),
        ("web-02", "finished"),
    ]
    nodes = (await api.get(f"/jobs/{job['name']}/nodes")).json()["items"]
    for item, node in zip(report["items"], nodes, strict=True):
        assert item["timestamp"] == node["finish_timestamp"]
        assert item["events"] == [
            e["id"] for e in events if e["details"].get("node") == item["node"]
        ]
    assert [len(i["events"]) for i in report["items"]] == [1, 2, 2]


async def test_the_report_of_an_unknown_job_is_404(api):
    response = await api.get("/jobs/999/report")
    assert response.status_code == 404
    assert response.json()["kind"] == "puppetlabs.orchestrator/unknown-job"


# The nodes


async def test_a_jobs_nodes_come_a_thousand_to_a_page_unless_asked(api, runtime):
    names = [f"ghost-{i:04d}" for i in range(1001)]  # never connected: they fail at once
    job = await ended(api, runtime, await submit(api, task_body(names)))
    page = (await api.get(f"/jobs/{job['name']}/nodes")).json()
    assert len(page["items"]) == 1000
    assert page["pagination"] == {"limit": 1000, "offset": 0, "total": 1001}
    assert page["items"][0]["disconnected"] is None
    rest = (await api.get(f"/jobs/{job['name']}/nodes", params={"offset": 1000})).json()
    assert [n["name"] for n in rest["items"]] == ["ghost-1000"]


# The job list


async def test_jobs_are_listed_by_state_and_owner(api, runtime):
    FakeAgent(runtime.broker, "web-01")
    FakeAgent(runtime.broker, "web-02", fail)
    FakeAgent(runtime.broker, "web-03", hold)
    done = await ended(api, runtime, await submit(api, task_body(["web-01"])))
    failed = await ended(api, runtime, await submit(api, task_body(["web-02"])))
    running = await submit(api, task_body(["web-03"]))
    await runtime.jobs.flush()

    async def names(**params: str) -> list[str]:
        page = (await api.get("/jobs", params=params)).json()
        assert page["pagination"]["total"] == len(page["items"])
        return [j["name"] for j in page["items"]]

    assert await names(state="finished") == [done["name"]]
    assert await names(state="failed") == [failed["name"]]
    assert await names(state="running") == [str(running)]
    assert await names(owner="admin") == [str(running), failed["name"], done["name"]]
    assert await names(owner="admin", state="failed") == [failed["name"]]
    assert await names(owner="someone-else") == []
    response = await api.get("/jobs", params={"state": "sleeping"})
    assert response.status_code == 400
    assert response.json()["kind"] == "puppetlabs.orchestrator/validation-error"
