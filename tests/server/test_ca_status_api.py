"""Reviewing, signing, revoking and cleaning certificates over Puppet's CA API, and the
bounds on what anyone may submit."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
from cryptography import x509

from access import admin_token
from podium.errors import ConfigError
from podium.pki.ca import AutosignPolicy
from podium.pki.keys import generate_key, make_csr
from podium.rbac.store import LOCAL
from podium.server.app import create_app
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings

PUPPET_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dUTC$")


def _client(runtime: Runtime, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(runtime)),
        base_url="https://podium.test",
        headers={"X-Authentication": token} if token else None,
    )


@pytest.fixture
async def ca_api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The CA API as an administrator calls it."""
    async with _client(runtime, admin_token(runtime)) as client:
        client.base_url = httpx.URL("https://podium.test/puppet-ca/v1")
        yield client


def _submit(runtime: Runtime, certname: str, token: str | None = None) -> str:
    csr = make_csr(certname, generate_key(), challenge_password=token)
    return runtime.ca.submit_csr(certname, csr)


async def _activity(client: httpx.AsyncClient, certname: str) -> list[tuple[str, str, str]]:
    answer = await client.get(
        "/activity-api/v1/events",
        params={"service_id": "ca", "object_id": certname, "order": "asc"},
    )
    assert answer.status_code == 200, answer.text
    return [
        (commit["subject"]["name"], event["type"], event["message"])
        for commit in answer.json()["commits"]
        for event in commit["events"]
    ]


# Who may


async def test_reviewing_needs_a_token_and_the_certificates_sign_permission(
    runtime: Runtime,
) -> None:
    runtime.access.store.create_user(
        login="viewer",
        kind=LOCAL,
        display_name="Viewer",
        email="",
        password_hash=None,
        role_ids=(),
        at=datetime.now(UTC),
    )
    _submit(runtime, "web-01")
    calls = [
        ("GET", "/puppet-ca/v1/certificate_statuses/any", None),
        ("GET", "/puppet-ca/v1/certificate_status/web-01", None),
        ("PUT", "/puppet-ca/v1/certificate_status/web-01", {"desired_state": "signed"}),
        ("DELETE", "/puppet-ca/v1/certificate_status/web-01", None),
    ]
    async with (
        _client(runtime) as anonymous,
        _client(runtime, runtime.access.token_for("viewer")) as viewer,
    ):
        for method, path, body in calls:
            nobody = await anonymous.request(method, path, json=body)
            assert nobody.status_code == 401, (method, path)
            refused = await viewer.request(method, path, json=body)
            assert refused.status_code == 403, (method, path)
            assert "certificates:sign" in refused.json()["msg"]
    assert runtime.ca.status("web-01").state == "requested"


# Reviewing


async def test_a_certificate_status_has_puppets_fields(
    ca_api: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.ca.set_autosign(AutosignPolicy(patterns=("web-*",)))
    _submit(runtime, "web-01")
    cert = x509.load_pem_x509_certificate(runtime.ca.certificate("web-01") or b"")

    answer = await ca_api.get("/certificate_status/web-01")

    assert answer.status_code == 200
    status = answer.json()
    assert status["name"] == "web-01"
    assert status["state"] == "signed"
    assert status["serial_number"] == cert.serial_number
    assert set(status["fingerprints"]) == {"SHA1", "SHA256", "SHA512", "default"}
    assert status["fingerprint"] == status["fingerprints"]["SHA256"]
    assert status["fingerprint"] == status["fingerprints"]["default"]
    assert status["dns_alt_names"] == ["web-01"]
    assert status["subject_alt_names"] == ["DNS:web-01"]
    assert PUPPET_TIME.match(status["not_before"]) and PUPPET_TIME.match(status["not_after"])
    assert status["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SUTC")
    assert "hold_reason" not in status


async def test_the_list_is_filtered_by_state(ca_api: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.ca.set_autosign(AutosignPolicy(patterns=("signed-*",)))
    _submit(runtime, "signed-1")
    _submit(runtime, "waiting-1")

    every = (await ca_api.get("/certificate_statuses/any")).json()
    requested = await ca_api.get("/certificate_statuses/any", params={"state": "requested"})
    bad = await ca_api.get("/certificate_statuses/any", params={"state": "lost"})

    names = {(s["name"], s["state"]) for s in every}
    assert {("signed-1", "signed"), ("waiting-1", "requested")} <= names
    assert [(s["name"], s["state"]) for s in requested.json()] == [("waiting-1", "requested")]
    assert "serial_number" not in requested.json()[0]
    assert bad.status_code == 400


async def test_an_unknown_certname_is_not_found(ca_api: httpx.AsyncClient) -> None:
    answer = await ca_api.get("/certificate_status/ghost")
    assert answer.status_code == 404
    assert answer.json()["kind"] == "podium.pki/unknown-certname"


# Deciding


async def test_signing_then_revoking_is_recorded_in_the_activity_log(
    ca_api: httpx.AsyncClient, runtime: Runtime
) -> None:
    _submit(runtime, "web-01")

    signed = await ca_api.put("/certificate_status/web-01", json={"desired_state": "signed"})

    assert signed.status_code == 204
    assert (await ca_api.get("/certificate/web-01")).status_code == 200
    serial = (await ca_api.get("/certificate_status/web-01")).json()["serial_number"]

    revoked = await ca_api.put("/certificate_status/web-01", json={"desired_state": "revoked"})

    assert revoked.status_code == 204
    assert (await ca_api.get("/certificate_status/web-01")).json()["state"] == "revoked"
    crl = x509.load_pem_x509_crl((await ca_api.get("/certificate_revocation_list/ca")).content)
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    async with _client(runtime, admin_token(runtime)) as client:
        assert await _activity(client, "web-01") == [
            ("admin", "sign", f"Signed the certificate of web-01 (serial {serial})."),
            ("admin", "revoke", f"Revoked the certificate of web-01 (serial {serial})."),
        ]


async def test_a_revoked_certname_waits_and_says_why_until_signed_by_name(
    ca_api: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.ca.set_autosign(AutosignPolicy(tokens=("secret",)))
    csr = make_csr("web-01", generate_key(), challenge_password="secret")
    assert (await ca_api.put("/certificate_request/web-01", content=csr)).text == "signed\n"
    await ca_api.put("/certificate_status/web-01", json={"desired_state": "revoked"})

    again = make_csr("web-01", generate_key(), challenge_password="secret")
    assert (await ca_api.put("/certificate_request/web-01", content=again)).text == "requested\n"

    pending = await ca_api.get("/certificate_statuses/any", params={"state": "requested"})
    assert [s["name"] for s in pending.json()] == ["web-01"]
    assert "was revoked" in pending.json()[0]["hold_reason"]
    signed = await ca_api.put("/certificate_status/web-01", json={"desired_state": "signed"})
    assert signed.status_code == 204
    assert (await ca_api.get("/certificate_status/web-01")).json()["state"] == "signed"


async def test_decisions_that_do_not_apply_are_refused(
    ca_api: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.ca.set_autosign(AutosignPolicy(patterns=("signed-*",)))
    _submit(runtime, "signed-1")
    _submit(runtime, "waiting-1")
    path = "/certificate_status/{}"

    ghost = await ca_api.put(path.format("ghost"), json={"desired_state": "signed"})
    twice = await ca_api.put(path.format("signed-1"), json={"desired_state": "signed"})
    early = await ca_api.put(path.format("waiting-1"), json={"desired_state": "revoked"})
    unknown = await ca_api.put(path.format("waiting-1"), json={"desired_state": "lost"})
    extra = await ca_api.put(
        path.format("waiting-1"), json={"desired_state": "signed", "cert_ttl": 60}
    )

    assert ghost.status_code == 404
    assert twice.status_code == 409 and "no pending certificate request" in twice.json()["msg"]
    assert early.status_code == 409 and "only a pending request" in early.json()["msg"]
    assert unknown.status_code == 400 and extra.status_code == 400
    assert runtime.ca.status("waiting-1").state == "requested"


async def test_cleaning_forgets_a_certname_so_it_enrolls_again(
    ca_api: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.ca.set_autosign(AutosignPolicy(patterns=("web-*",)))
    _submit(runtime, "web-01")
    serial = runtime.ca.status("web-01").serial

    cleaned = await ca_api.delete("/certificate_status/web-01")

    assert cleaned.status_code == 204
    assert (await ca_api.get("/certificate_status/web-01")).status_code == 404
    assert (await ca_api.get("/certificate/web-01")).status_code == 404
    assert (await ca_api.delete("/certificate_status/web-01")).status_code == 404
    assert _submit(runtime, "web-01") == "signed"
    async with _client(runtime, admin_token(runtime)) as client:
        assert await _activity(client, "web-01") == [
            (
                "admin",
                "clean",
                f"Cleaned web-01: revoked serial {serial} and removed its certificate and request.",
            )
        ]


# What anyone may submit


Submit = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
async def limited(settings: ServerSettings) -> AsyncIterator[Submit]:
    """``submit(certname, token=None, ip=...)`` to a server whose CA lets one address
    make 2 requests wait (and no more for 100 minutes), and at most 3 wait in all."""
    tight = dataclasses.replace(
        settings, csr_burst=2, csr_requests_per_minute=0.01, max_pending_csrs=3
    )
    runtime = Runtime(tight)
    await runtime.start()
    app = create_app(runtime)

    async def submit(
        certname: str, token: str | None = None, ip: str = "192.0.2.1"
    ) -> httpx.Response:
        csr = make_csr(certname, generate_key(), challenge_password=token)
        transport = httpx.ASGITransport(app=app, client=(ip, 4711))
        async with httpx.AsyncClient(transport=transport, base_url="https://podium.test") as c:
            return await c.put(f"/puppet-ca/v1/certificate_request/{certname}", content=csr)

    try:
        runtime.ca.set_autosign(AutosignPolicy(tokens=("secret",)))
        yield submit
    finally:
        await runtime.stop()


async def test_one_address_is_limited_in_the_requests_it_makes_wait(
    limited: Submit,
) -> None:
    assert [(await limited(f"web-{i}")).text for i in (1, 2)] == ["requested\n"] * 2

    refused = await limited("web-3")

    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("text/plain")
    assert refused.text.startswith("too many certificate requests from 192.0.2.1")
    assert int(refused.headers["Retry-After"]) > 0
    # Requests the policy signs do not wait, so they are not limited; other addresses are
    # limited on their own.
    assert (await limited("web-4", token="secret")).text == "signed\n"
    assert (await limited("web-5", ip="192.0.2.2")).text == "requested\n"


async def test_the_number_of_waiting_requests_is_capped(limited: Submit) -> None:
    for i, ip in enumerate(("192.0.2.1", "192.0.2.2", "192.0.2.3")):
        assert (await limited(f"web-{i}", ip=ip)).text == "requested\n"

    full = await limited("web-9", ip="192.0.2.4")

    assert full.status_code == 503
    assert full.headers["content-type"].startswith("text/plain")
    assert "holds 3 pending certificate requests" in full.text
    assert (await limited("web-10", token="secret", ip="192.0.2.4")).text == "signed\n"


@pytest.mark.parametrize(
    "limit", [{"csr_burst": 0}, {"csr_requests_per_minute": 0.0}, {"max_pending_csrs": -1}]
)
def test_limits_that_let_no_request_wait_stop_the_server(
    settings: ServerSettings, limit: dict[str, float]
) -> None:
    name = next(iter(limit))
    with pytest.raises(ConfigError, match=f"{name} \\(PODIUM_{name.upper()}\\) must be more"):
        Runtime(dataclasses.replace(settings, **limit))
