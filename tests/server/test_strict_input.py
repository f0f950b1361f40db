"""Strict input everywhere: what the API fuzzing found, each a 400 (or 404), never a 500.

Booleans are JSON booleans, numbers are numbers in range, and text is text that UTF-8
can carry: a lone surrogate (``"\\ud800"`` in JSON, which Python's parser lets through)
is refused before any route sees it, wherever it is.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from podium.server.app import create_app

from .fleet import FakeAgent
from .jobs_api import submit, task_body

ROOT = "https://podium.test"
BIG = 2**63  # one past the databases' largest integer
JSON = {"Content-Type": "application/json"}


async def error_of(response: httpx.Response, status: int | set[int]) -> dict[str, Any]:
    assert response.status_code in ({status} if isinstance(status, int) else status), (
        response.status_code,
        response.text,
    )
    payload = response.json()
    assert set(payload) == {"kind", "msg", "details"}
    return payload


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/command/task", task_body(["web-01"], noop="yes")),
        ("/command/task", task_body(["web-01"], fail_fast=1)),
        ("/command/stop", {"job": 1, "force": "yes"}),
        ("/command/rerun", {"job": 1, "only_failed": "true"}),
        ("/command/ping", {"scope": {"nodes": ["web-01"]}, "timeout": "5"}),
    ],
)
async def test_a_boolean_or_number_given_as_a_string_is_a_400(api, runtime, path, body):
    FakeAgent(runtime.broker, "web-01")
    payload = await error_of(await api.post(path, json=body), 400)
    assert payload["kind"] == "puppetlabs.orchestrator/validation-error"
    assert (await api.get("/jobs")).json()["pagination"]["total"] == 0


@pytest.mark.parametrize(
    ("job", "status"), [("²", 404), ("99999999999999999999", 400), ("9" * 5000, 400)]
)
async def test_a_job_id_that_is_no_number_or_too_large_is_refused(api, job, status):
    for path in (f"/jobs/{job}", f"/jobs/{job}/nodes", f"/jobs/{job}/events"):
        await error_of(await api.get(path), status)
    await error_of(await api.post("/command/stop", json={"job": job}), status)


async def test_a_job_id_too_large_for_json_numbers_is_a_400(api):
    await error_of(await api.post("/command/stop", json={"job": 99999999999999999999}), 400)
    body = b'{"job": ' + b"9" * 5000 + b"}"
    await error_of(await api.post("/command/stop", content=body, headers=JSON), 400)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/jobs", {"offset": BIG}),
        ("/jobs/{job}/nodes", {"offset": BIG}),
        ("/jobs/{job}/events", {"start": BIG}),
    ],
)
async def test_an_offset_past_the_largest_integer_is_a_400(api, runtime, path, params):
    FakeAgent(runtime.broker, "web-01")
    job = await submit(api, task_body(["web-01"]))
    payload = await error_of(await api.get(path.format(job=job), params=params), 400)
    assert next(iter(params)) in payload["msg"]


@pytest.mark.parametrize("last", ["²", "-1", "9" * 19, "9" * 5000])
async def test_a_last_event_id_that_is_no_event_id_is_a_400(api, runtime, last):
    FakeAgent(runtime.broker, "web-01")
    job = await submit(api, task_body(["web-01"]))
    headers = {"Accept": "text/event-stream", "Last-Event-ID": last.encode()}
    payload = await error_of(await api.get(f"/jobs/{job}/events", headers=headers), 400)
    assert "Last-Event-ID" in payload["msg"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/orchestrator/v1/command/stop", b'{"job": "\\ud800"}'),
        ("/orchestrator/v1/command/task", b'{"task": "podium::echo", "params": {"\\udfff": 1}}'),
        ("/orchestrator/v1/targets", b'{"scope": {"\\ud800": null}}'),
        ("/rbac-api/v1/auth/token", b'{"login": "admin\\ud800", "password": "x"}'),
        ("/rbac-api/v1/roles", b'{"display_name": "\\udc00"}'),
        ("/rbac-api/v1/permitted", b'{"permissions": [{"\\ud800": null}]}'),
        ("/orchestrator/v1/command/stop", b'{"job": "\xff"}'),  # not UTF-8
        ("/orchestrator/v1/command/task", b'{"task": "\\ud800", "params": {"n": NaN}}'),
    ],
)
async def test_a_lone_surrogate_or_bad_utf8_in_a_json_body_is_a_400(api, path, body):
    response = await api.post(ROOT + path, content=body, headers=JSON)
    payload = await error_of(response, 400)
    assert payload["kind"] == "puppetlabs.orchestrator/validation-error"
    assert "not valid text" in payload["msg"]


async def test_a_json_body_nested_past_what_parsers_take_is_a_400(api):
    body = b'{"job": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    await error_of(await api.post("/command/stop", content=body, headers=JSON), 400)


async def test_a_surrogate_escape_in_a_json_query_parameter_is_a_400(api):
    query = '["=", "certname", "\\ud800"]'
    response = await api.get(ROOT + "/pdb/query/v4/nodes", params={"query": query})
    await error_of(response, 400)


async def _asgi_get(runtime, path: str, token: str) -> tuple[int, bytes]:
    """A GET with ``path`` given to the app as it is, as a server that decodes paths
    loosely (``surrogateescape``) would hand over one whose bytes are not UTF-8."""
    app = create_app(runtime)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(errors="surrogatepass"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"podium.test"), (b"x-authentication", token.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("podium.test", 443),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    "path",
    [
        "/orchestrator/v1/jobs/\udcff",
        "/orchestrator/v1/inventory/web\ud800",
        "/rbac-api/v1/users/\udcc3\udca9",
        "/classifier-api/v1/groups/\udcff",
    ],
)
async def test_a_lone_surrogate_in_a_path_parameter_is_a_400(api, runtime, path):
    token = api.headers["X-Authentication"]
    status, body = await _asgi_get(runtime, path, token)
    assert status == 400, body
    assert b"lone surrogate" in body


async def test_without_a_token_a_surrogate_in_the_path_is_still_a_401(runtime):
    status, _ = await _asgi_get(runtime, "/orchestrator/v1/jobs/\udcff", "guess")
    assert status == 401


# PuppetDB's API


def _replace_facts(**params: Any) -> dict[str, Any]:
    return {
        "params": {"command": "replace facts", "version": 5, "certname": "web-01", **params},
        "json": {
            "certname": "web-01",
            "values": {"os": "linux"},
            "producer_timestamp": "2024-01-01T00:00:00Z",
        },
    }


@pytest.mark.parametrize("seconds", ["soon", "nan", "inf", "-1"])
async def test_a_wait_that_is_no_number_of_seconds_is_a_400_and_stores_nothing(api, seconds):
    command = _replace_facts(secondsToWaitForCompletion=seconds)
    response = await api.post(ROOT + "/pdb/cmd/v1", **command)
    payload = await error_of(response, 400)
    assert "secondsToWaitForCompletion" in payload["msg"]
    nodes = await api.get(ROOT + "/pdb/query/v4/nodes")
    assert nodes.json() == []


@pytest.mark.parametrize("name", ["include_total", "pretty", "ast_only"])
async def test_a_query_flag_is_true_or_false(api, name):
    ok = await api.get(ROOT + "/pdb/query/v4", params={"query": "nodes {}", name: "false"})
    assert ok.status_code == 200, ok.text
    response = await api.get(ROOT + "/pdb/query/v4", params={"query": "nodes {}", name: "yes"})
    payload = await error_of(response, 400)
    assert name in payload["msg"]
    body = {"query": ["from", "nodes"], name: "yes"}
    await error_of(await api.post(ROOT + "/pdb/query/v4", json=body), 400)


@pytest.mark.parametrize(
    ("path", "query"),
    [("/nodes", [[]]), ("/nodes", ["and", [{}]]), ("", ["from", "nodes", [[]]])],
)
async def test_an_ast_operator_that_is_no_string_is_a_400(api, path, query):
    response = await api.post(ROOT + "/pdb/query/v4" + path, json={"query": query})
    await error_of(response, 400)


async def test_a_query_offset_past_the_largest_integer_is_a_400(api):
    response = await api.post(ROOT + "/pdb/query/v4/nodes", json={"offset": BIG})
    await error_of(response, 400)
