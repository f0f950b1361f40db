"""Every route of the API fuzzed from its OpenAPI schema, with an admin's token and without.

schemathesis draws valid and invalid requests for each operation of ``/openapi.json``,
and one string of a JSON body in two gets a lone surrogate or a NUL (which schemathesis
never writes); each request goes through the in-process app on the test's event loop
(hypothesis runs in a worker thread and hands requests over). Whatever a request
holds, the answer is never a 5xx, and its status and body are ones the route declares
(every error is the API's ``{kind, msg, details}``). With the token comes an agent's
certificate, for the agents' routes. Without a token, every route but the open ones
answers 401 (403 for the agents' routes) before it reads anything.

The examples are few and derandomized, so that a run is quick and the same every time;
``PODIUM_FUZZ_EXAMPLES`` asks for more and ``PODIUM_FUZZ_SEED`` for others (when
hunting, not in CI). A failure names the operation, the request and the error the
server raised.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from access import admin_token
from podium.errors import Unauthenticated
from podium.server.access import RULE_KEY
from podium.server.app import create_app
from podium.server.peer import CERT_NAME, CERT_SERIAL
from podium.server.runtime import Runtime

BASE = "http://podium.test"
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
EXAMPLES = int(os.environ.get("PODIUM_FUZZ_EXAMPLES", "0")) or None
SEED = os.environ.get("PODIUM_FUZZ_SEED")  # other examples than CI's, when hunting

# What schemathesis never puts in a string, and JSON can still carry.
POISON = ("\ud800", "\udfff", "\x00")
KEY = object()  # in a path to a string: the string is the key that follows

# Without a token: what each kind of route answers (404 and 405: a path parameter with
# a "/" in it that routes elsewhere, or nowhere).
REFUSED = {"node": {403, 404, 405}, "other": {401, 404, 405}}


def _seeded(test: Callable[..., None]) -> Callable[..., None]:
    return seed(int(SEED))(test) if SEED else test


def _settings(examples: int) -> settings:
    return settings(
        max_examples=EXAMPLES or examples,
        derandomize=SEED is None,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
        print_blob=False,
    )


def _as_agent(app: Any) -> Any:
    """``app`` called as if over TLS with an agent's certificate (as the listener in
    :mod:`podium.server.peer` tells it), so that the agents' routes are fuzzed too."""

    async def agent_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": {CERT_NAME: "web-01", CERT_SERIAL: 1}}
        await app(scope, receive, send)

    return agent_app


class Caller:
    """Sends schemathesis cases to the app on ``loop``, from hypothesis's thread."""

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop, *, admin: bool) -> None:
        self.runtime = runtime
        self.loop = loop
        self.admin = admin  # an admin's token and an agent's certificate, or nothing
        app = create_app(runtime)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_as_agent(app) if admin else app), base_url=BASE
        )
        self.token = ""
        self.sent = ""  # the last request, for the report of a failure

    def _token(self) -> str:
        """An admin token that works: a fuzzed request may have revoked the last one."""
        if self.token:
            try:
                self.runtime.access.principal(self.token)
                return self.token
            except Unauthenticated:
                pass
        self.token = admin_token(self.runtime)
        return self.token

    def send(self, case: schemathesis.Case, data: st.DataObject) -> httpx.Response:
        kwargs = case.as_transport_kwargs(base_url=BASE)
        headers = dict(kwargs.get("headers") or {})
        if self.admin:
            headers["X-Authentication"] = self._token()
        url, params = kwargs["url"], kwargs.get("params")
        try:
            if params:
                query = params if isinstance(params, str) else urlencode(params, doseq=True)
                url = f"{url}?{query}"
            if "json" in kwargs:
                # As requests sends JSON: escaped to ASCII, so a lone surrogate goes as \ud800.
                content: bytes | None = json.dumps(_poison(kwargs["json"], data)).encode()
                headers.setdefault("Content-Type", "application/json")
            else:
                raw = kwargs.get("data")
                content = raw.encode() if isinstance(raw, str) else raw
            request = self.client.build_request(
                kwargs["method"], url, headers=headers, content=content
            )
        except (UnicodeEncodeError, httpx.LocalProtocolError, httpx.InvalidURL):
            reject()  # a surrogate in the URL or a header: no client can send it
        self.sent = f"{request.method} {request.url} {request.content[:2000]!r}"
        future = asyncio.run_coroutine_threadsafe(self.client.send(request), self.loop)
        return future.result(timeout=60)


def _strings(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where the strings of a JSON value are, keys included."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in [(*path, KEY, k), *_strings(v, (*path, k))]]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _strings(v, (*path, i))]
    return []


def _poison(body: Any, data: st.DataObject) -> Any:
    """``body``, or a copy with a lone surrogate or a NUL added to one of its strings."""
    places = _strings(body)
    if not places or not data.draw(st.booleans(), label="poisoned"):
        return body
    path = data.draw(st.sampled_from(places), label="where")
    bad = data.draw(st.sampled_from(POISON), label="with")
    if not path:
        return body + bad
    body = copy.deepcopy(body)
    is_key = path[-2:-1] == (KEY,)
    parent = body
    for step in path[:-2] if is_key else path[:-1]:
        parent = parent[step]
    if is_key:
        parent[path[-1] + bad] = parent.pop(path[-1])
    else:
        parent[path[-1]] += bad
    return body


Check = Callable[[schemathesis.Case, httpx.Response], None]


def _plain(schema: dict[str, Any]) -> bool:
    if "anyOf" in schema:
        return all(_plain(s) for s in schema["anyOf"])
    return schema.get("type") == "null" or (
        schema.get("type") == "string" and not set(schema) - {"type", "title", "default"}
    )


def _negatable(operation: Any) -> bool:
    """Whether schemathesis can make a request to ``operation`` invalid: not when it
    takes no body and only optional, unconstrained strings (hypothesis would spend
    hundreds of tries to find that out)."""
    raw = operation.definition.raw
    return "requestBody" in raw or any(
        not _plain(p.get("schema", {})) or (p["in"] != "path" and p.get("required"))
        for p in raw.get("parameters", [])
    )


def _fuzz(caller: Caller, schema: Any, *, examples: int, check: Check) -> list[str]:
    """Each operation's failures, after hypothesis shrank them."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in MODES if _negatable(operation) else MODES[:1]:

            @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
            @_settings(examples)
            @_seeded
            def run(case: schemathesis.Case, data: st.DataObject) -> None:
                caller.sent = ""
                try:
                    check(case, caller.send(case, data))
                except Exception as exc:
                    exc.add_note(f"request: {caller.sent}")
                    raise

            try:
                run()
            except Unsatisfiable:
                pass  # nothing of it can be invalid (no parameters, or only strings)
            except Exception as exc:
                report = "".join(traceback.format_exception(exc, limit=-8))
                failures.append(f"{operation.label} ({mode.value}):\n{report}")
    return failures


async def _run(runtime: Runtime, *, admin: bool, examples: int, check: Check) -> list[str]:
    caller = Caller(runtime, asyncio.get_running_loop(), admin=admin)
    async with caller.client:
        response = await caller.client.get("/openapi.json")
        assert response.status_code == 200, response.text
        schema = schemathesis.openapi.from_dict(response.json())
        return await asyncio.to_thread(_fuzz, caller, schema, examples=examples, check=check)


async def test_no_request_of_an_admin_makes_the_api_fail_or_break_its_schema(
    runtime: Runtime,
) -> None:
    def check(case: schemathesis.Case, response: httpx.Response) -> None:
        case.validate_response(response, checks=CHECKS)

    failures = await _run(runtime, admin=True, examples=12, check=check)
    assert not failures, "\n\n".join(failures)


async def test_without_a_token_every_route_but_the_open_ones_answers_401(
    runtime: Runtime,
) -> None:
    def check(case: schemathesis.Case, response: httpx.Response) -> None:
        case.validate_response(response, checks=CHECKS)
        rule = case.operation.definition.raw[RULE_KEY]
        if rule != "open":
            expected = REFUSED["node" if rule == "node" else "other"]
            assert response.status_code in expected, (response.status_code, response.text)

    failures = await _run(runtime, admin=False, examples=5, check=check)
    assert not failures, "\n\n".join(failures)


async def test_the_schema_names_each_operation_once_and_documents_its_errors(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get(BASE + "/openapi.json")
    operations = [op for item in response.json()["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    for operation in operations:
        errors = operation["responses"]["4XX"]["content"]["application/json"]["schema"]
        assert errors == {"$ref": "#/components/schemas/ErrorBody"}
        assert "422" not in operation["responses"]  # invalid input is a 400
