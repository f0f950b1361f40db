"""Task jobs through the API, the job engine, the broker's routing and the store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx

from podium.server.runtime import Runtime
from waiting import DEADLINE, until

from .conftest import api_client
from .fleet import FakeAgent
from .jobs_api import set_limits


def task_body(nodes: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "task": "podium::echo",
        "params": {"message": "hi"},
        "scope": {"nodes": nodes},
        **extra,
    }


async def run(api: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/command/task", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["job"]["name"]
    await asyncio.wait_for(runtime.jobs.wait(int(job_id)), DEADLINE)
    return (await api.get(f"/jobs/{job_id}")).json()


async def start(api: httpx.AsyncClient, body: dict[str, Any]) -> int:
    """Submit a job; returns its id once its (only) node's agent has accepted the
    request: the node shows as running."""
    response = await api.post("/command/task", json=body)
    assert response.status_code == 202, response.text
    job_id = int(response.json()["job"]["name"])
    await until(lambda: node_state(api, job_id, "running"), what=f"job {job_id} to run")
    return job_id


async def node_state(api: httpx.AsyncClient, job_id: int, state: str) -> bool:
    (node,) = (await api.get(f"/jobs/{job_id}/nodes")).json()["items"]
    return bool(node["state"] == state)


async def nodes_of(api: httpx.AsyncClient, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    items = (await api.get(f"/jobs/{job['name']}/nodes")).json()["items"]
    return {n["name"]: n for n in items}


async def test_a_task_on_three_nodes_finishes_with_every_result(api, runtime):
    agents = [FakeAgent(runtime.broker, f"web-0{i}") for i in (1, 2, 3)]
    job = await run(api, runtime, task_body([a.certname for a in agents], description="hello"))
    assert job["state"] == "finished"
    assert job["node_count"] == 3
    assert job["node_states"] == {"finished": 3}
    assert job["description"] == "hello"
    assert job["options"]["task"] == "podium::echo"
    nodes = await nodes_of(api, job)
    assert {n["result"]["_output"] for n in nodes.values()} == {"hi\n"}
    assert all(n["start_timestamp"] and n["finish_timestamp"] for n in nodes.values())
    # Each agent got one request with the task's file and its hash, and an ack.
    for agent in agents:
        (request,) = agent.requests
        assert request.params["task"] == "podium::echo"
        assert request.params["input"] == {"message": "hi"}
        (file,) = request.params["files"]
        assert len(file["sha256"]) == 64
        assert file["uri"]["path"].startswith("/puppet/v3/file_content/tasks/podium/")
        assert agent.acks == [request.transaction_id]


async def test_events_tell_the_story_of_the_job_in_order(api, runtime):
    FakeAgent(runtime.broker, "web-01")
    job = await run(api, runtime, task_body(["web-01"]))
    page = (await api.get(f"/jobs/{job['name']}/events")).json()
    types = [e["type"] for e in page["items"]]
    assert types == ["job_running", "node_running", "node_finished", "job_finished"]
    assert page["items"][1]["details"]["node"] == "web-01"
    # A final event carries the node's result, so a watcher needs no other call.
    assert page["items"][2]["details"]["result"] == {"_output": "hi\n"}
    assert page["items"][3]["details"] == {"state": "finished"}
    nxt = page["next-events"]["event"]
    later = (await api.get(f"/jobs/{job['name']}/events", params={"start": nxt})).json()
    assert later["items"] == []
    assert later["job_state"] == "finished"


async def test_unknown_and_offline_nodes_fail_with_a_reason_and_are_never_dropped(api, runtime):
    FakeAgent(runtime.broker, "web-01")
    await asyncio.to_thread(runtime.store.record_facts, "db-01", {"os": {}}, datetime.now(UTC))
    job = await run(api, runtime, task_body(["web-01", "db-01", "ghost"]))
    assert job["state"] == "failed"
    assert job["node_states"] == {"finished": 1, "failed": 2}
    nodes = await nodes_of(api, job)
    assert nodes["db-01"]["details"]["message"] == "node db-01 is not connected to the broker"
    assert nodes["ghost"]["details"]["message"].startswith("unknown node ghost")


async def test_a_task_error_fails_the_node_and_the_job(api, runtime):
    error = {"_error": {"kind": "puppetlabs.tasks/task-error", "msg": "boom", "details": {}}}
    FakeAgent(runtime.broker, "web-01", lambda request: error)
    FakeAgent(runtime.broker, "web-02")
    job = await run(api, runtime, task_body(["web-01", "web-02"]))
    assert job["state"] == "failed"
    nodes = await nodes_of(api, job)
    assert nodes["web-01"]["state"] == "failed"
    assert nodes["web-01"]["result"] == error
    assert nodes["web-02"]["state"] == "finished"


async def test_an_agent_that_refuses_the_request_leaves_the_node_errored(api, runtime):
    agent = FakeAgent(runtime.broker, "web-01", lambda request: None)
    job_id = await start(api, task_body(["web-01"]))
    (request,) = agent.requests
    from podium.protocol import messages as msg

    agent.send(
        msg.RpcError(transaction_id=request.transaction_id, description="no such action"),
        runtime.link.uri,
    )
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    nodes = (await api.get(f"/jobs/{job_id}/nodes")).json()["items"]
    assert nodes[0]["state"] == "errored"
    assert nodes[0]["details"]["message"] == "no such action"


async def test_a_result_sent_for_another_nodes_transaction_is_ignored(api, runtime):
    victim = FakeAgent(runtime.broker, "web-01", lambda request: None)
    liar = FakeAgent(runtime.broker, "web-02", lambda request: None)
    job_id = await start(api, task_body(["web-01"]))
    (request,) = victim.requests
    liar.finish(request.transaction_id, {"_output": "forged"}, runtime.link.uri)
    await runtime.jobs.flush()
    nodes = (await api.get(f"/jobs/{job_id}/nodes")).json()["items"]
    assert nodes[0]["state"] == "running"
    victim.finish(request.transaction_id, {"_output": "real"}, runtime.link.uri)
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    nodes = (await api.get(f"/jobs/{job_id}/nodes")).json()["items"]
    assert nodes[0]["result"] == {"_output": "real"}


async def test_a_node_that_reconnects_mid_job_gets_the_request_again(api, runtime):
    agent = FakeAgent(runtime.broker, "web-01", lambda request: None)
    job_id = await start(api, task_body(["web-01"]))
    agent.disconnect()
    agent.behaviour = lambda request: {"_output": "after reconnect"}
    agent.connect()
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    assert len(agent.requests) == 2
    assert agent.requests[0].transaction_id == agent.requests[1].transaction_id
    job = (await api.get(f"/jobs/{job_id}")).json()
    assert job["state"] == "finished"


async def test_a_node_that_stays_away_past_the_grace_period_ends_errored(api, runtime):
    set_limits(runtime, reconnect_grace=0.05)
    agent = FakeAgent(runtime.broker, "web-01", lambda request: None)
    job_id = await start(api, task_body(["web-01"]))
    agent.disconnect()
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    nodes = (await api.get(f"/jobs/{job_id}/nodes")).json()["items"]
    assert nodes[0]["state"] == "errored"
    assert "did not come back within" in nodes[0]["details"]["message"]
    assert nodes[0]["disconnected"] is None  # given up on: no longer waited for
    job = (await api.get(f"/jobs/{job_id}")).json()
    assert job["state"] == "failed"


async def test_a_duplicate_final_result_is_acknowledged_again_and_changes_nothing(api, runtime):
    agent = FakeAgent(runtime.broker, "web-01")
    job = await run(api, runtime, task_body(["web-01"]))
    (request,) = agent.requests
    agent.finish(request.transaction_id, {"_output": "late copy"}, runtime.link.uri)
    await runtime.jobs.flush()
    assert agent.acks == [request.transaction_id, request.transaction_id]
    nodes = await nodes_of(api, job)
    assert nodes["web-01"]["result"] == {"_output": "hi\n"}


async def test_facts_sent_by_an_agent_are_stored(api, runtime):
    from podium.protocol import messages as msg

    agent = FakeAgent(runtime.broker, "web-01")
    agent.send(msg.FactsUpdate(facts={"os": {"family": "Debian"}}), "pcp://*/server")
    await runtime.jobs.flush()
    node = await asyncio.to_thread(runtime.store.get_node, "web-01")
    assert node.facts == {"os": {"family": "Debian"}}
    inventory = (await api.get("/inventory")).json()["items"]
    assert inventory == [
        {
            "name": "web-01",
            "connected": True,
            "broker": f"wss://127.0.0.1:{runtime.broker.port}/pcp/v2",
            "timestamp": inventory[0]["timestamp"],
            "last_seen": inventory[0]["last_seen"],
            "agent_version": None,
            "features": None,
        }
    ]


async def test_a_restarted_server_resumes_unfinished_jobs(settings, api, runtime):
    agent = FakeAgent(runtime.broker, "web-01", lambda request: None)
    job_id = await start(api, task_body(["web-01"]))
    (request,) = agent.requests
    await runtime.stop()

    again = Runtime(settings)
    await again.start()
    try:
        agent.broker = again.broker
        agent.behaviour = lambda request: {"_output": "done"}
        agent.connect()
        await asyncio.wait_for(again.jobs.wait(job_id), DEADLINE)
        job = await asyncio.to_thread(again.store.get_job, job_id)
        assert job.state == "finished"
        assert [r.transaction_id for r in agent.requests] == [request.transaction_id] * 2
    finally:
        await again.stop()
        await runtime.start()  # the fixture stops it again


async def test_sensitive_parameters_reach_the_node_but_the_job_shows_them_masked(
    settings, tmp_path
):
    import dataclasses

    tasks = tmp_path / "code" / "environments" / "production" / "modules" / "vault" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "init.json").write_text(
        '{"parameters": {"user": {"type": "String"},'
        ' "password": {"type": "String", "sensitive": true}}}'
    )
    (tasks / "init.sh").write_text("echo ok\n")
    runtime = Runtime(dataclasses.replace(settings, codedir=tmp_path / "code"))
    await runtime.start()
    try:
        agent = FakeAgent(runtime.broker, "web-01")
        async with api_client(runtime) as client:
            body = {
                "task": "vault",
                "params": {"user": "ops", "password": "hunter2"},
                "scope": {"nodes": ["web-01"]},
            }
            job = await run(client, runtime, body)
            assert job["options"]["params"] == {
                "user": "ops",
                "password": "Sensitive [value redacted]",
            }
            assert "hunter2" not in (await client.get(f"/jobs/{job['name']}")).text
            listing = (await client.get("/jobs")).text
            assert "hunter2" not in listing
        assert agent.requests[0].params["input"] == {"user": "ops", "password": "hunter2"}
    finally:
        await runtime.stop()


async def test_a_result_with_nul_characters_is_stored_on_every_database(api, runtime):
    FakeAgent(runtime.broker, "web-01", lambda request: {"_output": "a\x00b"})
    job = await run(api, runtime, task_body(["web-01"]))
    nodes = await nodes_of(api, job)
    assert nodes["web-01"]["result"] == {"_output": "a\ufffdb"}
    # The engine goes on: a later job runs normally.
    later = await run(api, runtime, task_body(["web-01"]))
    assert later["state"] == "finished"


async def test_task_input_too_big_for_a_message_is_refused_before_any_job(api, runtime):
    FakeAgent(runtime.broker, "web-01")
    body = task_body(["web-01"])
    body["params"] = {"message": "x" * 1_100_000}
    response = await api.post("/command/task", json=body)
    assert response.status_code == 400
    assert "over the 1048576-byte message limit" in response.json()["msg"]
    assert (await api.get("/jobs")).json()["pagination"]["total"] == 0


async def test_a_result_arriving_after_the_grace_period_corrects_node_and_job(api, runtime):
    set_limits(runtime, reconnect_grace=0.05)
    agent = FakeAgent(runtime.broker, "web-01", lambda request: None)
    job_id = await start(api, task_body(["web-01"]))
    agent.disconnect()
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    assert (await api.get(f"/jobs/{job_id}")).json()["state"] == "failed"
    assert await node_state(api, job_id, "errored")

    agent.connect()
    (request, *_) = agent.requests
    agent.finish(request.transaction_id, {"_output": "ran after all\n"}, runtime.link.uri)
    await runtime.jobs.flush()
    node = (await api.get(f"/jobs/{job_id}/nodes")).json()["items"][0]
    assert node["state"] == "finished"
    assert node["result"] == {"_output": "ran after all\n"}
    assert "arrived after the node was given up on" in node["details"]["message"]
    assert (await api.get(f"/jobs/{job_id}")).json()["state"] == "finished"
    assert agent.acks == [request.transaction_id]
    events = (await api.get(f"/jobs/{job_id}/events")).json()["items"]
    assert [e["type"] for e in events][-3:] == ["node_errored", "job_finished", "node_finished"]
    assert events[-1]["details"]["late"] is True


async def test_the_server_deletes_jobs_older_than_the_retention_period(settings):
    import dataclasses
    from datetime import timedelta

    from podium.errors import NotFound
    from podium.store import JobUpdate, Store

    long_ago = datetime.now(UTC) - timedelta(days=3)
    with Store(settings.db_url) as store:
        store.migrate()
        old = store.create_job(
            type="task", owner="admin", environment="production", description="",
            options={}, nodes=[("web-01", "tx-old")], at=long_ago,
        )  # fmt: skip
        store.set_job_state(JobUpdate(old, "finished", finished_at=long_ago))
        kept = store.create_job(
            type="task", owner="admin", environment="production", description="",
            options={}, nodes=[("web-01", "tx-kept")], at=datetime.now(UTC),
        )  # fmt: skip
        store.set_job_state(JobUpdate(kept, "finished", finished_at=datetime.now(UTC)))
    runtime = Runtime(dataclasses.replace(settings, job_retention_days=2))

    async def purged() -> bool:
        try:
            await asyncio.to_thread(runtime.store.get_job, old)
        except NotFound:
            return True
        return False

    await runtime.start()
    try:
        await until(purged, what="the old job to be deleted")
        assert (await asyncio.to_thread(runtime.store.get_job, kept)).id == kept
    finally:
        await runtime.stop()
