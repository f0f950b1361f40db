"""A job's pace through the API: concurrency, batches, fail-fast, the job's timeout,
offline nodes' TTL, the server-wide cap, and the checks on each of these options.

The agents are in-process (fleet.py) and the broker routes synchronously: once an
agent's result is sent, whatever the job service starts because of it has been sent too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from waiting import until

from .fleet import FakeAgent, fail, hold
from .jobs_api import (
    advance,
    ended,
    events_of,
    job_of,
    most_running_at_once,
    nodes_of,
    runtime_with,
    sent,
    states_of,
    submit,
    task_body,
    types_of,
    until_running,
    use_clock,
)


async def finished(api: httpx.AsyncClient, job_id: int, certname: str) -> bool:
    return (await states_of(api, job_id))[certname] == "finished"


async def test_concurrency_keeps_at_most_n_nodes_running_until_the_job_ends(api, runtime):
    agents = [FakeAgent(runtime.broker, f"web-0{i}", hold) for i in range(1, 6)]
    job_id = await submit(api, task_body([a.certname for a in agents], concurrency=2))
    done: set[str] = set()
    while len(done) < len(agents):
        expected = min(2, len(agents) - len(done))
        await until_running(api, job_id, expected)
        assert sent(agents) == len(done) + expected
        states = await states_of(api, job_id)
        agent = next(a for a in agents if states[a.certname] == "running")
        agent.complete()
        done.add(agent.certname)
        assert sent(agents) <= len(done) + 2  # the next node at most, never more
    job = await ended(api, runtime, job_id)
    assert (job["state"], job["node_states"]) == ("finished", {"finished": 5})
    assert job["options"]["concurrency"] == 2
    assert most_running_at_once(await events_of(api, job_id)) == 2


async def test_a_batch_of_half_the_nodes_runs_two_then_the_next_two(api, runtime):
    agents = [FakeAgent(runtime.broker, f"web-0{i}", hold) for i in range(1, 5)]
    first, second = agents[:2], agents[2:]
    job_id = await submit(api, task_body([a.certname for a in agents], batch="50%"))
    await until_running(api, job_id, 2)
    assert [len(a.requests) for a in agents] == [1, 1, 0, 0]

    # One node of the batch ending starts nothing: the whole batch must end first.
    first[0].complete()
    await runtime.jobs.flush()
    assert (await states_of(api, job_id))["web-01"] == "finished"
    assert sent(agents) == 2
    first[1].complete()
    assert [len(a.requests) for a in agents] == [1, 1, 1, 1]
    await until_running(api, job_id, 2)
    for agent in second:
        agent.complete()
    job = await ended(api, runtime, job_id)
    assert job["state"] == "finished"
    events = await events_of(api, job_id)
    order = [(e["type"], e["details"].get("node")) for e in events if e["type"] != "job_running"]
    ended_first = max(order.index(("node_finished", a.certname)) for a in first)
    started_next = min(order.index(("node_running", a.certname)) for a in second)
    assert ended_first < started_next


async def test_batches_wait_their_batch_sleep_between_them(api, runtime):
    clock = use_clock(runtime)
    agents = [FakeAgent(runtime.broker, f"web-0{i}", hold) for i in (1, 2)]
    job_id = await submit(api, task_body(["web-01", "web-02"], batch=1, batch_sleep=30))
    await until_running(api, job_id, 1)
    agents[0].complete()
    await runtime.jobs.flush()
    assert (await states_of(api, job_id)) == {"web-01": "finished", "web-02": "new"}
    await advance(runtime, clock, 29)
    assert [len(a.requests) for a in agents] == [1, 0]
    await advance(runtime, clock, 2)
    assert [len(a.requests) for a in agents] == [1, 1]
    await until_running(api, job_id, 1)
    agents[1].complete()
    assert (await ended(api, runtime, job_id))["state"] == "finished"


async def test_fail_fast_skips_the_nodes_not_started_after_the_first_failure(api, runtime):
    FakeAgent(runtime.broker, "web-01", fail)
    later = [FakeAgent(runtime.broker, name) for name in ("web-02", "web-03")]
    body = task_body(["web-01", "web-02", "web-03"], concurrency=1, fail_fast=True)
    job = await ended(api, runtime, await submit(api, body))
    assert (job["state"], job["node_states"]) == ("failed", {"failed": 1, "skipped": 2})
    nodes = await nodes_of(api, int(job["name"]))
    assert nodes["web-02"]["details"]["message"] == (
        "not started: node web-01 failed and the job is fail-fast"
    )
    assert sent(later) == 0


async def test_without_fail_fast_a_failure_does_not_stop_the_rest(api, runtime):
    FakeAgent(runtime.broker, "web-01", fail)
    FakeAgent(runtime.broker, "web-02")
    body = task_body(["web-01", "web-02"], concurrency=1)
    job = await ended(api, runtime, await submit(api, body))
    assert (job["state"], job["node_states"]) == ("failed", {"failed": 1, "finished": 1})


async def test_a_job_timeout_aborts_the_job_killing_runs_and_skipping_the_rest(api, runtime):
    clock = use_clock(runtime)
    running = FakeAgent(runtime.broker, "web-01", hold)
    queued = FakeAgent(runtime.broker, "web-02", hold)
    body = task_body(["web-01", "web-02"], concurrency=1, job_timeout=60)
    job_id = await submit(api, body)
    await until_running(api, job_id, 1)
    await advance(runtime, clock, 59)
    assert (await job_of(api, job_id))["state"] == "running"

    await advance(runtime, clock, 2)
    job = await ended(api, runtime, job_id)
    assert (job["state"], job["node_states"]) == ("failed", {"errored": 1, "skipped": 1})
    why = "the job did not finish within its timeout of 1 min"
    events = await events_of(api, job_id)
    (aborted,) = [e for e in events if e["type"] == "job_aborted"]
    assert aborted["details"] == {"reason": why}
    assert types_of(events)[-1] == "job_finished"
    nodes = await nodes_of(api, job_id)
    assert nodes["web-01"]["details"]["message"] == why
    assert nodes["web-02"]["details"]["message"] == f"not started: {why}"
    (kill,) = running.blocking
    assert (kill.module, kill.action) == ("task", "stop")
    assert kill.params["transaction_id"] == running.requests[0].transaction_id
    assert queued.requests == []


async def test_offline_nodes_run_if_they_connect_within_the_ttl_and_fail_if_not(api, runtime):
    clock = use_clock(runtime)
    now = datetime.fromtimestamp(clock.now, UTC)
    await asyncio.to_thread(runtime.store.touch_nodes, ["web-02", "web-03"], now)
    FakeAgent(runtime.broker, "web-01")
    body = task_body(["web-01", "web-02", "web-03"], offline_ttl=120)
    job_id = await submit(api, body)

    await until(lambda: finished(api, job_id, "web-01"), what="web-01 to finish")
    assert (await states_of(api, job_id)) == {
        "web-01": "finished",
        "web-02": "new",
        "web-03": "new",
    }
    await advance(runtime, clock, 60)
    late = FakeAgent(runtime.broker, "web-02")
    assert len(late.requests) == 1  # sent as soon as it connected
    await until(lambda: finished(api, job_id, "web-02"), what="web-02 to finish")
    await advance(runtime, clock, 61)
    job = await ended(api, runtime, job_id)
    assert job["state"] == "failed"
    nodes = await nodes_of(api, job_id)
    assert nodes["web-02"]["state"] == "finished"
    assert nodes["web-03"]["state"] == "failed"
    assert nodes["web-03"]["details"]["message"] == (
        "node web-03 did not connect within the job's offline TTL of 2 min"
    )


async def test_the_server_wide_cap_keeps_a_second_job_ready_until_a_node_ends(settings):
    async with runtime_with(settings, task_concurrency=1) as (runtime, api):
        first_agent = FakeAgent(runtime.broker, "web-01", hold)
        second_agent = FakeAgent(runtime.broker, "web-02")
        first = await submit(api, task_body(["web-01"]))
        await until_running(api, first, 1)
        second = await submit(api, task_body(["web-02"]))
        await runtime.jobs.flush()
        assert (await job_of(api, second))["state"] == "ready"
        assert types_of(await events_of(api, second)) == ["job_ready"]
        ready = (await api.get("/jobs", params={"state": "ready"})).json()["items"]
        assert [j["name"] for j in ready] == [str(second)]
        assert second_agent.requests == []

        first_agent.complete()
        assert len(second_agent.requests) == 1
        assert (await ended(api, runtime, second))["state"] == "finished"
        assert types_of(await events_of(api, second)) == [
            "job_ready",
            "job_running",
            "node_running",
            "node_finished",
            "job_finished",
        ]
        assert (await job_of(api, first))["state"] == "finished"


async def test_a_job_waiting_for_the_server_wide_cap_stops_at_once(settings):
    async with runtime_with(settings, task_concurrency=1) as (runtime, api):
        busy = FakeAgent(runtime.broker, "web-01", hold)
        idle = FakeAgent(runtime.broker, "web-02", hold)
        first = await submit(api, task_body(["web-01"]))
        await until_running(api, first, 1)
        second = await submit(api, task_body(["web-02"]))
        stopped = (await api.post("/command/stop", json={"job": second})).json()["job"]
        assert (stopped["state"], stopped["nodes"]) == ("stopped", {"skipped": 1})
        assert types_of(await events_of(api, second)) == [
            "job_ready",
            "job_stopping",
            "node_skipped",
            "job_finished",
        ]
        busy.complete()
        assert (await ended(api, runtime, first))["state"] == "finished"
        assert idle.requests == []


@pytest.mark.parametrize(
    ("pace", "words"),
    [
        ({"batch": "0%"}, "batch must be a number of nodes (at least 1) or a percentage"),
        ({"batch": "101%"}, "batch must be a number of nodes"),
        ({"batch": "abc"}, "batch must be a number of nodes"),
        ({"batch": 0}, "batch must be a number of nodes"),
        ({"batch": True}, "batch"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": "2"}, "concurrency"),
        ({"batch_sleep": -1}, "batch_sleep"),
        ({"batch_sleep": True}, "batch_sleep"),
        ({"batch_sleep": "5"}, "batch_sleep"),
        ({"job_timeout": 0}, "job_timeout"),
        ({"offline_ttl": 8 * 24 * 3600}, "offline_ttl"),
        ({"fail_fast": "yes"}, "fail_fast"),
        ({"pace": "fast"}, "pace"),
    ],
)
async def test_a_bad_pace_option_is_refused_with_what_to_fix(api, runtime, pace, words):
    FakeAgent(runtime.broker, "web-01")
    response = await api.post("/command/task", json=task_body(["web-01"], **pace))
    assert response.status_code == 400, response.text
    payload = response.json()
    assert set(payload) == {"kind", "msg", "details"}
    assert payload["kind"] == "puppetlabs.orchestrator/validation-error"
    assert words in payload["msg"]
    assert (await api.get("/jobs")).json()["pagination"]["total"] == 0
