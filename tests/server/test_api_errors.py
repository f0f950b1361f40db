"""Bad requests get a clear {kind, msg, details} error and change nothing."""

from __future__ import annotations

import pytest

from .fleet import FakeAgent


def body(**changes):
    return {
        "task": "podium::echo",
        "params": {"message": "x"},
        "scope": {"nodes": ["web-01"]},
        **changes,
    }


async def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"kind", "msg", "details"}
    return payload


@pytest.mark.parametrize(
    ("changes", "kind", "words"),
    [
        ({"params": {}}, "validation-error", "'message' (String) is required"),
        (
            {"params": {"message": "x", "colour": "red"}},
            "validation-error",
            "unknown parameter 'colour'",
        ),
        ({"params": {"message": 5}}, "validation-error", "message"),
        ({"scope": {"nodes": []}}, "empty-target", "targets no nodes"),
        ({"scope": {"nodes": ["Bad Name!"]}}, "validation-error", "invalid node 'Bad Name!'"),
        (
            {"scope": {"nodes": ["a"], "query": "nodes {}"}},
            "validation-error",
            "give exactly one of nodes, query or node_group",
        ),
        ({"scope": {"query": "nodes { certname ~~ 1 }"}}, "query-error", "PQL parse error"),
        ({"surprise": True}, "validation-error", "surprise"),
        ({"params": None}, "validation-error", "params"),
    ],
)
async def test_an_invalid_task_command_is_refused_with_what_to_fix(
    api, runtime, changes, kind, words
):
    FakeAgent(runtime.broker, "web-01")
    payload = await error_of(await api.post("/command/task", json=body(**changes)), 400)
    assert payload["kind"] == f"puppetlabs.orchestrator/{kind}"
    assert words in payload["msg"]
    assert (await api.get("/jobs")).json()["pagination"]["total"] == 0


async def test_an_unknown_task_or_environment_is_404_with_what_exists(api):
    payload = await error_of(await api.post("/command/task", json=body(task="nope::x")), 404)
    assert payload["kind"] == "puppetlabs.orchestrator/unknown-task"
    assert "podium" in payload["msg"]
    payload = await error_of(await api.post("/command/task", json=body(environment="staging")), 404)
    assert payload["kind"] == "puppetlabs.orchestrator/unknown-environment"


async def test_a_body_that_is_not_json_is_a_validation_error(api):
    response = await api.post(
        "/command/task", content=b"{nope", headers={"content-type": "application/json"}
    )
    payload = await error_of(response, 400)
    assert payload["kind"] == "puppetlabs.orchestrator/validation-error"


@pytest.mark.parametrize("job", ["999", "abc"])
async def test_an_unknown_job_is_404_unknown_job(api, job):
    for path in (f"/jobs/{job}", f"/jobs/{job}/nodes", f"/jobs/{job}/events"):
        payload = await error_of(await api.get(path), 404)
        assert payload["kind"] == "puppetlabs.orchestrator/unknown-job"


async def test_listing_jobs_checks_its_query_parameters(api):
    payload = await error_of(await api.get("/jobs", params={"order_by": "colour"}), 400)
    assert "order_by" in payload["msg"]
    payload = await error_of(await api.get("/jobs", params={"limit": 0}), 400)
    assert "limit" in payload["msg"]


async def test_jobs_are_listed_newest_first_with_paging(api, runtime):
    FakeAgent(runtime.broker, "web-01")
    for _ in range(3):
        assert (await api.post("/command/task", json=body())).status_code == 202
    page = (await api.get("/jobs", params={"limit": 2})).json()
    assert page["pagination"]["total"] == 3
    assert [j["name"] for j in page["items"]] == ["3", "2"]
    page = (await api.get("/jobs", params={"limit": 2, "offset": 2})).json()
    assert [j["name"] for j in page["items"]] == ["1"]


async def test_unknown_paths_answer_in_the_error_shape(api):
    payload = await error_of(await api.get("/nothing-here"), 404)
    assert payload["kind"] == "puppetlabs.orchestrator/not-found"


async def test_task_listing_names_the_built_in_tasks(api):
    items = (await api.get("/tasks")).json()["items"]
    assert {t["name"] for t in items} >= {"podium::echo", "podium::command"}


@pytest.mark.parametrize(
    ("headers", "words"),
    [({}, "needs a token"), ({"X-Authentication": "guess"}, "not valid")],
)
async def test_the_api_refuses_callers_without_the_token(api, headers, words):
    api.headers.pop("X-Authentication")
    for method, path in (("GET", "/jobs"), ("POST", "/command/task"), ("GET", "/inventory")):
        response = await api.request(method, path, headers=headers, json=body())
        payload = await error_of(response, 401)
        assert payload["kind"] == "puppetlabs.rbac/user-unauthenticated"
        assert words in payload["msg"]
