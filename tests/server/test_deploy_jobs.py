"""Deploy jobs (Puppet runs) through the API, the job engine and the broker's routing:
what each node is asked to run, what its result becomes, and what is refused."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from podium.protocol import messages as msg
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings
from waiting import DEADLINE, until

from .conftest import api_client
from .fleet import FakeAgent

ROOT_GROUP = "00000000-0000-4000-8000-000000000000"
SITE = "node default { include motd }\n"


def ran(certname: str, status: str = "changed", **extra: Any) -> dict[str, Any]:
    """A ``puppet``/``run`` result as an agent sends it."""
    return {
        "status": status,
        "noop": False,
        "noop_pending": False,
        "metrics": {"total": 1, "changed": int(status == "changed"), "failed": 0},
        "events": [],
        "logs": [],
        "transaction_uuid": "tx",
        "environment": "production",
        "report": {"certname": certname, "status": status, "environment": "production"},
        **extra,
    }


def puppet(request: msg.NonBlockingRequest) -> dict[str, Any]:
    return ran(request.params.get("_certname", "x"))


@pytest.fixture
def settings(settings: ServerSettings, tmp_path: Path) -> ServerSettings:
    code = tmp_path / "code"
    site = code / "environments/production/manifests/site.pp"
    site.parent.mkdir(parents=True)
    site.write_text(SITE)
    motd = code / "environments/production/modules/motd/manifests/init.pp"
    motd.parent.mkdir(parents=True)
    motd.write_text("class motd($text = 'hi') { notify { $text: } }\n")
    (code / "environments/staging/manifests").mkdir(parents=True)
    return dataclasses.replace(settings, codedir=code)


@pytest.fixture
async def admin(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(runtime) as client:
        client.base_url = httpx.URL("https://podium.test")
        yield client


class Agent(FakeAgent):
    """Answers ``puppet``/``run`` as a Puppet run of its own certname."""

    def __init__(self, runtime: Runtime, certname: str, status: str = "changed") -> None:
        super().__init__(runtime.broker, certname, lambda r: ran(certname, status))


async def deploy(api: httpx.AsyncClient, runtime: Runtime, **body: Any) -> dict[str, Any]:
    response = await api.post("/command/deploy", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["job"]["name"]
    await asyncio.wait_for(runtime.jobs.wait(int(job_id)), DEADLINE)
    return dict((await api.get(f"/jobs/{job_id}")).json())


async def nodes_of(api: httpx.AsyncClient, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    items = (await api.get(f"/jobs/{job['name']}/nodes")).json()["items"]
    return {n["name"]: n for n in items}


async def test_apply_mode_sends_the_packed_environment_and_each_nodes_classes(
    api: httpx.AsyncClient, admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    group = await admin.post(
        "/classifier-api/v1/groups",
        json={
            "name": "web",
            "parent": ROOT_GROUP,
            "rule": ["~", "name", "^web"],
            "classes": {"motd": {"text": "welcome"}},
            "variables": {"tier": "front"},
        },
    )
    assert group.status_code == 303, group.text
    web, db = Agent(runtime, "web-01"), Agent(runtime, "db-01")
    job = await deploy(api, runtime, scope={"nodes": ["web-01", "db-01"]}, description="roll")
    assert job["type"] == "deploy"
    assert job["state"] == "finished"
    assert job["description"] == "roll"
    (web_request,), (db_request,) = web.requests, db.requests
    assert (web_request.module, web_request.action) == ("puppet", "run")
    params = web_request.params
    assert params["mode"] == "apply"
    assert params["environment"] == "production"
    assert params["noop"] is None  # each node keeps its own setting
    assert params["classification"] == {
        "classes": {"motd": {"text": "welcome"}},
        "parameters": {"tier": "front"},
    }
    assert db_request.params["classification"] == {"classes": {}, "parameters": {}}
    code = params["code"]
    assert code == db_request.params["code"]  # one pack for the job
    path = runtime.jobs.packer.path(code["sha256"]) if runtime.jobs.packer else None
    assert path is not None and path.stat().st_size == code["size_bytes"]
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes()), mode="r:gz") as tar:
        site = tar.extractfile("production/manifests/site.pp")
        assert site is not None and site.read().decode() == SITE
        assert "production/modules/motd/manifests/init.pp" in tar.getnames()


async def test_a_nodes_result_keeps_its_summary_and_sends_its_report_on(
    api: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored: list[dict[str, Any]] = []
    monkeypatch.setattr(runtime.jobs, "_record_reports", stored.extend)
    Agent(runtime, "web-01")
    job = await deploy(api, runtime, scope={"nodes": ["web-01"]})
    node = (await nodes_of(api, job))["web-01"]
    assert node["state"] == "finished"
    assert node["result"]["status"] == "changed"
    assert node["result"]["metrics"]["changed"] == 1
    assert "report" not in node["result"]
    assert stored == [
        {
            "certname": "web-01",
            "status": "changed",
            "environment": "production",
            "job_id": job["name"],
        }
    ]


async def test_a_failed_run_fails_its_node(api: httpx.AsyncClient, runtime: Runtime) -> None:
    agent = FakeAgent(
        runtime.broker,
        "web-01",
        lambda r: ran(
            "web-01", "failed", _error={"kind": "podium.puppet/run-failed", "msg": "1 failed"}
        ),
    )
    job = await deploy(api, runtime, scope={"nodes": [agent.certname]})
    assert job["state"] == "failed"
    node = (await nodes_of(api, job))["web-01"]
    assert node["state"] == "failed"
    assert node["result"]["_error"]["msg"] == "1 failed"


@pytest.mark.parametrize(
    ("flags", "sent"),
    [
        ({"noop": True}, {"noop": True}),
        ({"no_noop": True}, {"noop": False}),
        ({"debug": True, "evaltrace": True}, {"noop": None, "debug": True, "evaltrace": True}),
    ],
)
async def test_flags_reach_the_agent(
    api: httpx.AsyncClient, runtime: Runtime, flags: dict[str, Any], sent: dict[str, Any]
) -> None:
    agent = Agent(runtime, "web-01")
    await deploy(api, runtime, scope={"nodes": ["web-01"]}, **flags)
    params = agent.requests[0].params
    assert {k: params[k] for k in sent} == sent
    assert "trace" not in params


async def test_agent_mode_sends_no_code(api: httpx.AsyncClient, runtime: Runtime) -> None:
    agent = Agent(runtime, "web-01")
    job = await deploy(
        api, runtime, scope={"nodes": ["web-01"]}, mode="agent", environment="staging"
    )
    assert job["options"]["mode"] == "agent"
    params = agent.requests[0].params
    assert params["mode"] == "agent"
    assert params["environment"] == "staging"
    assert "code" not in params and "classification" not in params


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"noop": True, "no_noop": True}, 400, "noop and no_noop exclude each other"),
        ({"environment": "nowhere"}, 404, "unknown environment 'nowhere'"),
        ({"mode": "remote"}, 400, "mode"),
        ({"scope": {"nodes": []}}, 400, "targets no nodes"),
        ({"tags": ["x"]}, 400, "tags"),
    ],
)
async def test_bad_commands_are_refused_before_any_job_exists(
    api: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any], status: int, words: str
) -> None:
    Agent(runtime, "web-01")
    response = await api.post("/command/deploy", json={"scope": {"nodes": ["web-01"]}, **body})
    assert response.status_code == status, response.text
    assert words in response.text
    assert (await api.get("/jobs")).json()["items"] == []


async def test_rerun_only_failed_runs_puppet_again_on_those(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    good, bad = Agent(runtime, "web-01"), Agent(runtime, "web-02", "failed")
    bad.behaviour = lambda r: ran("web-02", "failed", _error={"kind": "k", "msg": "m"})
    first = await deploy(api, runtime, scope={"nodes": ["web-01", "web-02"]}, noop=True)
    again = await api.post("/command/rerun", json={"job": first["name"], "only_failed": True})
    assert again.status_code == 202, again.text
    job_id = int(again.json()["job"]["name"])
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    job = (await api.get(f"/jobs/{job_id}")).json()
    assert job["type"] == "deploy"
    assert job["options"]["noop"] is True
    assert len(good.requests) == 1 and len(bad.requests) == 2
    assert bad.requests[1].params["noop"] is True


async def test_an_application_orders_the_run_and_a_failure_skips_its_dependants(
    api: httpx.AsyncClient, runtime: Runtime, settings: ServerSettings
) -> None:
    assert settings.codedir is not None
    apps = settings.codedir / "environments/production/applications"
    apps.mkdir()
    (apps / "shop.yaml").write_text(
        "components:\n"
        "  db: {nodes: [db-01], produces: [Sql]}\n"
        "  web: {nodes: [web-01, web-02], consumes: [Sql], produces: [Http]}\n"
        "  lb: {nodes: [lb-01], consumes: [Http]}\n"
    )
    db = FakeAgent(runtime.broker, "db-01", lambda r: None)  # holds until told
    web = [Agent(runtime, "web-01"), Agent(runtime, "web-02")]
    lb = Agent(runtime, "lb-01")
    response = await api.post(
        "/command/deploy", json={"scope": {"nodes": ["lb-01", "web-01", "web-02", "db-01"]}}
    )
    assert response.status_code == 202, response.text
    job_id = int(response.json()["job"]["name"])
    await until(lambda: _has_request(db), what="db-01 to be asked to run first")
    assert [a.requests for a in [*web, lb]] == [[], [], []]  # nobody else started
    db.complete(ran("db-01", "failed", _error={"kind": "k", "msg": "the database failed"}))
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    job = (await api.get(f"/jobs/{job_id}")).json()
    assert job["options"]["after"] == {
        "lb-01": ["web-01", "web-02"],
        "web-01": ["db-01"],
        "web-02": ["db-01"],
    }
    nodes = await nodes_of(api, job)
    assert {n: v["state"] for n, v in nodes.items()} == {
        "db-01": "failed",
        "web-01": "skipped",
        "web-02": "skipped",
        "lb-01": "skipped",
    }
    assert "runs after db-01, which failed" in nodes["web-01"]["details"]["message"]
    assert [a.requests for a in [*web, lb]] == [[], [], []]


async def test_a_cycle_in_the_applications_is_refused_naming_it(
    api: httpx.AsyncClient, runtime: Runtime, settings: ServerSettings
) -> None:
    assert settings.codedir is not None
    apps = settings.codedir / "environments/production/applications"
    apps.mkdir()
    (apps / "loop.yaml").write_text(
        "components:\n"
        "  a: {nodes: [web-01], produces: [X], consumes: [Y]}\n"
        "  b: {nodes: [web-02], produces: [Y], consumes: [X]}\n"
    )
    Agent(runtime, "web-01"), Agent(runtime, "web-02")
    response = await api.post("/command/deploy", json={"scope": {"nodes": ["web-01", "web-02"]}})
    assert response.status_code == 400, response.text
    assert response.json()["kind"] == "puppetlabs.orchestrator/dependency-cycle"
    assert "web-01" in response.json()["msg"] and "web-02" in response.json()["msg"]


def _has_request(agent: FakeAgent) -> bool:
    return bool(agent.requests)


async def test_a_restarted_server_resumes_a_deploy_in_its_order_without_rerunning_nodes(
    api: httpx.AsyncClient, runtime: Runtime, settings: ServerSettings
) -> None:
    assert settings.codedir is not None
    apps = settings.codedir / "environments/production/applications"
    apps.mkdir()
    (apps / "pair.yaml").write_text(
        "components:\n  db: {nodes: [db-01], produces: [Sql]}\n"
        "  web: {nodes: [web-01], consumes: [Sql]}\n"
    )
    db = FakeAgent(runtime.broker, "db-01", lambda r: None)  # holds until told
    web = Agent(runtime, "web-01")
    response = await api.post("/command/deploy", json={"scope": {"nodes": ["db-01", "web-01"]}})
    job_id = int(response.json()["job"]["name"])
    await until(lambda: _has_request(db), what="db-01 to run")
    (request,) = db.requests
    await runtime.stop()

    again = Runtime(settings)
    await again.start()
    try:
        for agent in (db, web):
            agent.broker = again.broker
            agent.connect()
        # db-01's agent answers the re-sent request from its spool: the same transaction
        db.complete(ran("db-01"))
        await asyncio.wait_for(again.jobs.wait(job_id), DEADLINE)
        job = await asyncio.to_thread(again.store.get_job, job_id)
        assert job.state == "finished"
        assert {r.transaction_id for r in db.requests} == {request.transaction_id}
        (web_request,) = web.requests  # started only after db-01 finished
        assert web_request.params["code"]["sha256"] == request.params["code"]["sha256"]
    finally:
        await again.stop()
        await runtime.start()  # the fixture stops it again
