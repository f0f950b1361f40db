"""Tasks through the API: listing and metadata in PE's shapes, typed parameters, noop,
timeouts, implementations chosen by the node's features, and secrets kept secret."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from podium.protocol import messages as msg
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings
from waiting import DEADLINE, until

from .fleet import FakeAgent

SECRET = "hunter2-correct-horse"

CODE = {
    "environments/production/modules/app/tasks/deploy.json": {
        "description": "Deploy the app",
        "supports_noop": True,
        "parameters": {
            "version": {"type": "String[1]", "description": "what to deploy"},
            "retries": {"type": "Integer[0, 5]", "default": 2},
            "opts": {"type": "Optional[Struct[{mode => Enum[fast, safe]}]]"},
            "password": {"type": "Optional[String[1]]", "sensitive": True},
        },
        "implementations": [
            {"name": "deploy.py", "requirements": ["python"], "input_method": "stdin"},
            {"name": "deploy.sh", "requirements": ["shell"]},
        ],
        "files": ["app/files/common.sh"],
    },
    "environments/production/modules/app/tasks/deploy.py": "print('{}')\n",
    "environments/production/modules/app/tasks/deploy.sh": "#!/bin/sh\necho '{}'\n",
    "environments/production/modules/app/files/common.sh": "x=1\n",
    "environments/production/modules/app/tasks/win.json": {
        "implementations": [{"name": "win.ps1", "requirements": ["powershell"]}]
    },
    "environments/production/modules/app/tasks/win.ps1": "exit 0\n",
    "environments/production/modules/app/tasks/hidden.json": {"private": True},
    "environments/production/modules/app/tasks/hidden.sh": "#!/bin/sh\n",
    "environments/staging/modules/.keep": "",
}


@pytest.fixture
def settings(settings: ServerSettings, tmp_path: Path) -> ServerSettings:
    """The server of conftest.py, on a code directory holding CODE."""
    code = tmp_path / "code"
    for relative, content in CODE.items():
        path = code / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return dataclasses.replace(settings, codedir=code)


async def connect(runtime: Runtime, certname: str, features: list[str] | None) -> FakeAgent:
    """A fake agent that has told the server its features, as a real one does on connect."""
    agent = FakeAgent(runtime.broker, certname, lambda request: {"ok": True})
    agent.send(msg.FactsUpdate(facts={}, features=features), "pcp://*/server")
    await runtime.jobs.flush()
    stored = await asyncio.to_thread(runtime.store.node_features, [certname])
    assert stored.get(certname) == features
    return agent


async def submit(api: httpx.AsyncClient, **body: Any) -> httpx.Response:
    body.setdefault("params", {})
    return await api.post("/command/task", json=body)


async def finish(runtime: Runtime, response: httpx.Response) -> int:
    assert response.status_code == 202, response.text
    job_id = int(response.json()["job"]["name"])
    await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
    return job_id


async def test_the_task_list_has_every_public_task_with_its_description(api):
    listing = (await api.get("/tasks")).json()
    names = {t["name"]: t for t in listing["items"]}
    assert {"app::deploy", "app::win", "package", "service", "podium::echo"} <= set(names)
    assert "app::hidden" not in names
    assert names["app::deploy"]["description"] == "Deploy the app"
    assert names["app::deploy"]["module"] == "app"
    assert names["package"]["id"].endswith("/orchestrator/v1/tasks/package/init")
    assert listing["environment"]["name"] == "production"
    # Built-in modules are in every environment.
    staging = (await api.get("/tasks", params={"environment": "staging"})).json()
    assert {t["name"] for t in staging["items"]} >= {"package", "service", "podium::echo"}


async def test_a_tasks_metadata_and_files_come_in_pes_shape(api):
    found = (await api.get("/tasks/app/deploy")).json()
    assert found["name"] == "app::deploy"
    assert found["id"].endswith("/orchestrator/v1/tasks/app/deploy")
    assert found["environment"] == {"name": "production", "code_id": None}
    assert found["metadata"] == CODE["environments/production/modules/app/tasks/deploy.json"]
    files = {f["filename"]: f for f in found["files"]}
    assert set(files) == {"deploy.py", "deploy.sh", "app/files/common.sh"}
    assert files["deploy.sh"]["uri"] == {
        "path": "/puppet/v3/file_content/tasks/app/deploy.sh",
        "params": {"environment": "production"},
    }
    assert files["app/files/common.sh"]["uri"]["path"] == (
        "/puppet/v3/file_content/modules/app/files/common.sh"
    )
    assert files["app/files/common.sh"]["size_bytes"] == 4
    assert len(files["deploy.sh"]["sha256"]) == 64
    init = (await api.get("/tasks/package/init")).json()
    assert init["name"] == "package"


async def test_an_unknown_environment_names_those_that_exist(api):
    response = await api.get("/tasks", params={"environment": "nope"})
    assert response.status_code == 404
    body = response.json()
    assert body["kind"] == "puppetlabs.orchestrator/unknown-environment"
    assert "production, staging" in body["msg"]


async def test_parameters_are_checked_to_the_element_before_anything_is_sent(api, runtime):
    agent = await connect(runtime, "web-01", ["shell"])
    response = await submit(
        api,
        task="app::deploy",
        params={"version": "1.0", "opts": {"mode": "reckless"}, "colour": "red"},
        scope={"nodes": ["web-01"]},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["kind"] == "puppetlabs.orchestrator/validation-error"
    assert "opts.mode: expected Enum['fast', 'safe'], got \"reckless\"" in body["msg"]
    assert "unknown parameter 'colour'" in body["msg"]
    assert agent.requests == []
    assert (await api.get("/jobs")).json()["pagination"]["total"] == 0


async def test_values_json_cannot_carry_are_a_400(api, runtime):
    await connect(runtime, "web-01", ["shell"])
    raw = (
        '{"task": "app::deploy", "params": {"version": "1", "retries": NaN}, '
        '"scope": {"nodes": ["web-01"]}}'
    )
    response = await api.post(
        "/command/task", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not a JSON number" in response.json()["msg"]


async def test_noop_is_refused_for_a_task_that_does_not_support_it(api, runtime):
    await connect(runtime, "web-01", ["shell"])
    response = await submit(
        api,
        task="podium::command",
        params={"command": "true"},
        scope={"nodes": ["web-01"]},
        noop=True,
    )
    assert response.status_code == 400
    assert response.json()["kind"] == "puppetlabs.orchestrator/task-not-noop"
    assert "does not support noop" in response.json()["msg"]


@pytest.mark.parametrize(
    "field", [{"noop": "yes"}, {"timeout": 0}, {"timeout": "5"}, {"timeout": 1.5}]
)
async def test_options_of_the_wrong_type_are_a_400(api, runtime, field):
    await connect(runtime, "web-01", ["shell"])
    response = await submit(
        api, task="podium::echo", params={"message": "x"}, scope={"nodes": ["web-01"]}, **field
    )
    assert response.status_code == 400, response.text


async def test_noop_and_timeout_reach_the_node_and_the_job(api, runtime):
    agent = await connect(runtime, "web-01", ["shell"])
    job_id = await finish(
        runtime,
        await submit(
            api,
            task="app::deploy",
            params={"version": "2"},
            scope={"nodes": ["web-01"]},
            noop=True,
            timeout=30,
        ),
    )
    (request,) = agent.requests
    assert request.params["noop"] is True
    assert request.params["timeout"] == 30
    assert request.params["input"] == {"version": "2", "retries": 2}
    job = (await api.get(f"/jobs/{job_id}")).json()
    assert job["options"]["timeout"] == 30
    assert job["options"]["noop"] is True


async def test_each_node_gets_the_implementation_its_features_allow(api, runtime):
    py = await connect(runtime, "py-01", ["python", "shell"])
    sh = await connect(runtime, "sh-01", ["shell"])
    old = await connect(runtime, "old-01", None)  # an agent that never said: a shell
    win = await connect(runtime, "win-01", ["powershell"])
    job_id = await finish(
        runtime,
        await submit(
            api,
            task="app::deploy",
            params={"version": "1"},
            scope={"nodes": ["py-01", "sh-01", "old-01", "win-01"]},
        ),
    )
    names = {
        a.certname: [f["filename"] for f in a.requests[0].params["files"]] for a in (py, sh, old)
    }
    assert names == {
        "py-01": ["deploy.py", "app/files/common.sh"],
        "sh-01": ["deploy.sh", "app/files/common.sh"],
        "old-01": ["deploy.sh", "app/files/common.sh"],
    }
    assert py.requests[0].params["input_method"] == "stdin"
    assert win.requests == []
    nodes = {n["name"]: n for n in (await api.get(f"/jobs/{job_id}/nodes")).json()["items"]}
    assert nodes["win-01"]["state"] == "failed"
    reason = nodes["win-01"]["details"]["message"]
    assert "no implementation that node win-01 can run" in reason
    assert "offers powershell" in reason
    assert "deploy.sh needs shell" in reason


async def test_secrets_are_nowhere_in_clear_but_a_restarted_server_still_sends_them(
    settings, api, runtime
):
    agent = await connect(runtime, "web-01", ["shell"])
    agent.behaviour = lambda request: None  # stays running
    response = await submit(
        api,
        task="app::deploy",
        params={"version": "1", "password": SECRET},
        scope={"nodes": ["web-01"]},
    )
    job_id = int(response.json()["job"]["name"])
    await until(lambda: agent.requests, what="the request to reach the node")
    await runtime.jobs.flush()
    shown = (await api.get(f"/jobs/{job_id}")).text
    assert SECRET not in shown
    assert json.loads(shown)["options"]["params"]["password"] == "Sensitive [value redacted]"
    assert SECRET not in _database_text(runtime)
    await runtime.stop()

    again = Runtime(settings)
    await again.start()
    try:
        agent.broker = again.broker
        agent.behaviour = lambda request: {"ok": True}
        agent.connect()
        await asyncio.wait_for(again.jobs.wait(job_id), DEADLINE)
        assert [r.params["input"]["password"] for r in agent.requests] == [SECRET, SECRET]
        assert SECRET not in _database_text(again)
    finally:
        await again.stop()
        await runtime.start()  # the fixture stops it again


def _database_text(runtime: Runtime) -> str:
    """Everything the database holds, as text: the files for SQLite, the rows otherwise."""
    if runtime.store.dialect == "sqlite":
        db = Path(runtime.settings.db_url.removeprefix("sqlite:///"))
        return "".join(p.read_bytes().decode("latin-1") for p in db.parent.glob(db.name + "*"))
    with runtime.store._engine.connect() as connection:
        rows = connection.execute(text("SELECT options::text FROM jobs")).scalars()
        return "".join(rows)


async def test_the_data_folder_and_the_database_are_private(settings, runtime):
    assert settings.datadir.stat().st_mode & 0o777 == 0o700
    assert settings.sealing_key_path.stat().st_mode & 0o777 == 0o600
    if runtime.store.dialect == "sqlite":
        db = Path(settings.db_url.removeprefix("sqlite:///"))
        assert db.stat().st_mode & 0o777 == 0o600


async def test_a_readable_sealing_key_stops_the_server_from_starting(settings, runtime):
    from podium.errors import ConfigError

    settings.sealing_key_path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Runtime(dataclasses.replace(settings))
    settings.sealing_key_path.chmod(0o600)
