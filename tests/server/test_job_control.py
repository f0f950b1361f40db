"""Controlling jobs through the API: stop, forced stop, rerun, and what a node whose
agent dropped shows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from podium.server import views
from podium.server.runtime import Runtime
from waiting import DEADLINE

from .conftest import api_client
from .fleet import FakeAgent, fail, hold
from .jobs_api import (
    advance,
    ended,
    events_of,
    job_of,
    nodes_of,
    states_of,
    submit,
    task_body,
    types_of,
    until_running,
    use_clock,
)


async def stop(api: httpx.AsyncClient, job_id: int | str, **extra: Any) -> dict[str, Any]:
    response = await api.post("/command/stop", json={"job": job_id, **extra})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()["job"]
    return job


# Stopping


async def test_stop_skips_pending_nodes_lets_running_ones_finish_and_ends_stopped(api, runtime):
    agents = [FakeAgent(runtime.broker, f"web-0{i}", hold) for i in (1, 2, 3)]
    body = task_body([a.certname for a in agents], concurrency=1)
    job_id = await submit(api, body)
    await until_running(api, job_id, 1)

    answer = await stop(api, job_id)
    assert answer == {
        "id": f"https://podium.test/orchestrator/v1/jobs/{job_id}",
        "name": str(job_id),
        "state": "stopping",
        "nodes": {"running": 1, "skipped": 2},
    }
    nodes = await nodes_of(api, job_id)
    assert nodes["web-02"]["details"]["message"] == "not started: the job was stopped by admin"
    assert [len(a.requests) for a in agents] == [1, 0, 0]

    agents[0].complete()
    job = await ended(api, runtime, job_id)
    assert (job["state"], job["node_states"]) == ("stopped", {"finished": 1, "skipped": 2})
    assert agents[0].blocking == []  # a plain stop kills nothing
    types = types_of(await events_of(api, job_id))
    assert types.count("job_stopping") == 1
    assert types[-2:] == ["node_finished", "job_finished"]


async def test_stopping_again_changes_nothing(api, runtime):
    agent = FakeAgent(runtime.broker, "web-01", hold)
    FakeAgent(runtime.broker, "web-02", hold)
    job_id = await submit(api, task_body(["web-01", "web-02"], concurrency=1))
    await until_running(api, job_id, 1)
    first = await stop(api, job_id)
    again = await stop(api, job_id)
    assert again == first
    agent.complete()
    await ended(api, runtime, job_id)
    after = await stop(api, f"https://podium.test/orchestrator/v1/jobs/{job_id}")
    assert (after["state"], after["nodes"]) == ("stopped", {"finished": 1, "skipped": 1})
    assert types_of(await events_of(api, job_id)).count("job_stopping") == 1


async def test_a_forced_stop_kills_running_nodes_and_tells_their_agents(api, runtime):
    agents = [FakeAgent(runtime.broker, f"web-0{i}", hold) for i in (1, 2, 3)]
    job_id = await submit(api, task_body([a.certname for a in agents], concurrency=2))
    await until_running(api, job_id, 2)

    answer = await stop(api, job_id, force=True)
    assert (answer["state"], answer["nodes"]) == ("stopped", {"errored": 2, "skipped": 1})
    nodes = await nodes_of(api, job_id)
    for agent in agents[:2]:
        assert nodes[agent.certname]["details"]["message"] == "stopped by admin"
        (kill,) = agent.blocking
        assert (kill.module, kill.action) == ("task", "stop")
        assert kill.params["transaction_id"] == agent.requests[0].transaction_id
    assert agents[2].requests == [] and agents[2].blocking == []
    await ended(api, runtime, job_id)

    # The killed run's result, should one come, is kept; the node stays as stopped.
    agents[0].complete({"_output": "half done"})
    await runtime.jobs.flush()
    node = (await nodes_of(api, job_id))["web-01"]
    assert (node["state"], node["result"]) == ("errored", {"_output": "half done"})
    assert agents[0].acks == [agents[0].requests[0].transaction_id]
    assert (await job_of(api, job_id))["state"] == "stopped"


async def test_a_stop_can_be_forced_after_a_plain_one(api, runtime):
    agent = FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(api, task_body(["web-01"]))
    await until_running(api, job_id, 1)
    assert (await stop(api, job_id))["state"] == "stopping"
    forced = await stop(api, job_id, force=True)
    assert (forced["state"], forced["nodes"]) == ("stopped", {"errored": 1})
    assert len(agent.blocking) == 1


@pytest.mark.parametrize("job", [999, "999", "abc", 0])
async def test_stopping_an_unknown_job_is_404_unknown_job(api, job):
    response = await api.post("/command/stop", json={"job": job})
    assert response.status_code == 404, response.text
    assert response.json()["kind"] == "puppetlabs.orchestrator/unknown-job"


async def test_a_stop_command_with_an_unknown_field_is_refused(api):
    response = await api.post("/command/stop", json={"job": 1, "now": True})
    assert response.status_code == 400
    payload = response.json()
    assert set(payload) == {"kind", "msg", "details"}
    assert payload["kind"] == "puppetlabs.orchestrator/validation-error"
    assert "now" in payload["msg"]


# Rerunning


async def rerun(api: httpx.AsyncClient, job_id: int, **extra: Any) -> int:
    response = await api.post("/command/rerun", json={"job": job_id, **extra})
    assert response.status_code == 202, response.text
    job = response.json()["job"]
    assert job["id"] == f"https://podium.test/orchestrator/v1/jobs/{job['name']}"
    return int(job["name"])


async def test_a_rerun_runs_the_same_task_on_every_node_with_the_same_options(api, runtime):
    good = FakeAgent(runtime.broker, "web-01")
    bad = FakeAgent(runtime.broker, "web-02", fail)
    body = task_body(["web-01", "web-02"], concurrency=1, description="patch")
    first = await ended(api, runtime, await submit(api, body))
    assert first["state"] == "failed"

    again = await ended(api, runtime, await rerun(api, int(first["name"])))
    assert again["name"] != first["name"]
    assert (again["state"], again["node_states"]) == ("failed", {"finished": 1, "failed": 1})
    assert again["description"] == "patch"
    assert again["options"]["concurrency"] == 1
    assert again["options"]["scope"] == {"nodes": ["web-01", "web-02"]}
    assert again["owner"] == {"login": "admin"}
    assert [r.params["input"] for r in good.requests] == [{"message": "hi"}] * 2
    assert len(bad.requests) == 2


async def test_a_rerun_of_only_failed_nodes_targets_just_those(api, runtime):
    good = FakeAgent(runtime.broker, "web-01")
    bad = FakeAgent(runtime.broker, "web-02", fail)
    first = await ended(api, runtime, await submit(api, task_body(["web-01", "web-02"])))

    bad.behaviour = good.behaviour  # fixed
    again = await ended(api, runtime, await rerun(api, int(first["name"]), only_failed=True))
    assert (again["state"], again["node_states"]) == ("finished", {"finished": 1})
    assert again["options"]["scope"] == {"nodes": ["web-02"]}
    assert (len(good.requests), len(bad.requests)) == (1, 2)

    # Nothing failed this time: a rerun of the failed nodes has nothing to target.
    response = await api.post("/command/rerun", json={"job": again["name"], "only_failed": True})
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["kind"] == "puppetlabs.orchestrator/empty-target"
    assert "no failed, errored or skipped node" in payload["msg"]
    assert (await api.get("/jobs")).json()["pagination"]["total"] == 2


async def test_a_rerun_of_failed_nodes_takes_those_skipped_and_keeps_the_pace(api, runtime):
    FakeAgent(runtime.broker, "web-01", fail)
    FakeAgent(runtime.broker, "web-02")
    FakeAgent(runtime.broker, "web-03")
    body = task_body(["web-01", "web-02", "web-03"], concurrency=1, fail_fast=True)
    first = await ended(api, runtime, await submit(api, body))
    assert first["node_states"] == {"failed": 1, "skipped": 2}
    again = await job_of(api, await rerun(api, int(first["name"]), only_failed=True))
    assert again["options"]["scope"] == {"nodes": ["web-01", "web-02", "web-03"]}
    assert (again["options"]["concurrency"], again["options"]["fail_fast"]) == (1, True)
    await ended(api, runtime, int(again["name"]))


async def test_a_rerun_of_an_unknown_job_is_404(api):
    response = await api.post("/command/rerun", json={"job": 404})
    assert response.status_code == 404
    assert response.json()["kind"] == "puppetlabs.orchestrator/unknown-job"


# Disconnected nodes


async def test_a_node_whose_agent_dropped_shows_when_it_will_be_given_up(api, runtime):
    clock = use_clock(runtime)
    agent = FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(api, task_body(["web-01"]))
    await until_running(api, job_id, 1)
    assert (await nodes_of(api, job_id))["web-01"]["disconnected"] is None

    await advance(runtime, clock, 10)
    dropped_at = clock.now
    agent.disconnect()
    await runtime.jobs.flush()
    node = (await nodes_of(api, job_id))["web-01"]
    grace = runtime.jobs.limits.reconnect_grace
    give_up_at = views.timestamp(datetime.fromtimestamp(dropped_at + grace, UTC))
    assert node["state"] == "running"
    assert node["disconnected"] == {"give_up_at": give_up_at}
    events = await events_of(api, job_id)
    assert events[-1]["type"] == "node_disconnected"
    assert events[-1]["details"] == {"node": "web-01", "give_up_at": give_up_at}

    # Back in time: the request is sent again and the node no longer shows as dropped.
    agent.connect()
    await runtime.jobs.flush()
    assert (await nodes_of(api, job_id))["web-01"]["disconnected"] is None
    assert len(agent.requests) == 2
    assert types_of(await events_of(api, job_id))[-1] == "node_reconnected"
    agent.complete()
    assert (await ended(api, runtime, job_id))["state"] == "finished"


async def test_a_node_whose_agent_stays_away_past_the_grace_ends_errored(api, runtime):
    clock = use_clock(runtime)
    agent = FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(api, task_body(["web-01"]))
    await until_running(api, job_id, 1)
    agent.disconnect()
    await advance(runtime, clock, runtime.jobs.limits.reconnect_grace - 1)
    assert (await states_of(api, job_id)) == {"web-01": "running"}
    await advance(runtime, clock, 2)
    job = await ended(api, runtime, job_id)
    assert (job["state"], job["node_states"]) == ("failed", {"errored": 1})
    node = (await nodes_of(api, job_id))["web-01"]
    assert node["details"]["message"] == (
        "node web-01 disconnected from the broker and did not come back within 5 min"
    )
    assert node["disconnected"] is None


# Silent nodes


async def test_a_run_that_never_reports_ends_errored_after_its_timeout_and_a_margin(api, runtime):
    clock = use_clock(runtime)
    FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(api, task_body(["web-01"], timeout=60))
    await until_running(api, job_id, 1)
    answer = runtime.jobs.limits.answer_timeout
    await advance(runtime, clock, 60 + answer - 1)
    assert (await states_of(api, job_id)) == {"web-01": "running"}
    await advance(runtime, clock, 2)
    job = await ended(api, runtime, job_id)
    assert (job["state"], job["node_states"]) == ("failed", {"errored": 1})
    message = (await nodes_of(api, job_id))["web-01"]["details"]["message"]
    assert message == "the agent of web-01 reported no result within 2 min of starting the run"


async def test_an_agent_that_never_accepts_is_asked_twice_then_given_up(api, runtime):
    clock = use_clock(runtime)
    agent = FakeAgent(runtime.broker, "web-01", answers=False)
    job_id = await submit(api, task_body(["web-01"]))
    assert len(agent.requests) == 1
    answer = runtime.jobs.limits.answer_timeout
    await advance(runtime, clock, answer + 1)
    assert [r.transaction_id for r in agent.requests] == [agent.requests[0].transaction_id] * 2
    assert (await states_of(api, job_id)) == {"web-01": "new"}
    await advance(runtime, clock, answer + 1)
    job = await ended(api, runtime, job_id)
    assert (job["state"], job["node_states"]) == ("failed", {"errored": 1})
    message = (await nodes_of(api, job_id))["web-01"]["details"]["message"]
    assert message == "the agent of web-01 did not accept the request within 1 min (sent 2 times)"


# Restarts


async def test_after_a_restart_a_running_node_whose_agent_is_away_shows_as_disconnected(
    settings, api, runtime
):
    agent = FakeAgent(runtime.broker, "web-01", hold)
    job_id = await submit(api, task_body(["web-01"]))
    await until_running(api, job_id, 1)
    await runtime.stop()

    again = Runtime(settings)
    clock = use_clock(again)
    await again.start()  # the agent is not back: its broker was the old server's
    try:
        async with api_client(again) as client:
            await again.jobs.flush()
            # The resumed job gives the node the grace period, as for an agent that
            # dropped while the server ran; the API and the event log say so likewise.
            grace = again.jobs.limits.reconnect_grace
            give_up_at = views.timestamp(datetime.fromtimestamp(clock.now + grace, UTC))
            node = (await nodes_of(client, job_id))["web-01"]
            assert node["disconnected"] == {"give_up_at": give_up_at}
            assert types_of(await events_of(client, job_id))[-1] == "node_disconnected"

            assert again.broker is not None
            agent.broker = again.broker
            agent.connect()
            await again.jobs.flush()
            assert (await nodes_of(client, job_id))["web-01"]["disconnected"] is None
            assert types_of(await events_of(client, job_id))[-1] == "node_reconnected"
            agent.complete()
            await asyncio.wait_for(again.jobs.wait(job_id), DEADLINE)
    finally:
        await again.jobs.stop_job(job_id, by="the test", force=True)  # if it failed early
        await again.stop()
        await runtime.start()  # the fixture stops it again
