"""Enrollment over the CA API, as agents use it."""

from __future__ import annotations

import httpx
import pytest

from podium.pki.ca import AutosignPolicy
from podium.pki.keys import generate_key, make_csr
from podium.server.app import create_app


@pytest.fixture
async def ca_api(runtime):
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(
        transport=transport, base_url="https://podium.test/puppet-ca/v1"
    ) as client:
        yield client


async def test_an_agent_enrolls_and_fetches_its_certificate(ca_api, runtime):
    runtime.ca.set_autosign(AutosignPolicy(tokens=("secret",)))
    csr = make_csr("web-01", generate_key(), challenge_password="secret")
    answer = await ca_api.put("/certificate_request/web-01", content=csr)
    assert answer.status_code == 200 and answer.text == "signed\n"
    cert = await ca_api.get("/certificate/web-01")
    assert cert.status_code == 200 and cert.text.startswith("-----BEGIN CERTIFICATE-----")
    assert (await ca_api.get("/certificate/ca")).status_code == 200
    assert (await ca_api.get("/certificate_revocation_list/ca")).status_code == 200


async def test_an_unsigned_request_waits_and_a_missing_certificate_is_404(ca_api):
    csr = make_csr("web-02", generate_key())
    assert (await ca_api.put("/certificate_request/web-02", content=csr)).text == "requested\n"
    missing = await ca_api.get("/certificate/web-02")
    assert missing.status_code == 404
    assert missing.json()["kind"] == "podium.pki/not-signed"


async def test_bad_requests_are_refused_with_a_reason(ca_api):
    huge = await ca_api.put("/certificate_request/web-03", content=b"x" * 20_000)
    assert huge.status_code == 413
    garbage = await ca_api.put("/certificate_request/web-03", content=b"not a csr")
    assert garbage.status_code == 400
    wrong = make_csr("other", generate_key())
    mismatch = await ca_api.put("/certificate_request/web-03", content=wrong)
    assert mismatch.status_code == 400
    bad_name = await ca_api.get("/certificate/..%2Fetc")
    assert bad_name.status_code in (400, 404)
