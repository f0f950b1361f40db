"""A revoked certname stays out until an operator lets it back in; cleaning forgets it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from cryptography import x509

from podium.errors import NotFound, Unavailable
from podium.pki.ca import AutosignPolicy, CertificateAuthority
from podium.pki.keys import generate_key, make_csr

Submit = Callable[..., str]  # the conftest's submit(certname, token=None) fixture


def _enrolled(ca: CertificateAuthority, submit: Submit, certname: str) -> int:
    submit(certname)
    return x509.load_pem_x509_certificate(ca.sign(certname)).serial_number


def _held(ca: CertificateAuthority) -> dict[str, str | None]:
    return {info.certname: info.hold_reason for info in ca.list() if info.state == "requested"}


@pytest.mark.parametrize(
    ("policy", "token"),
    [(AutosignPolicy(patterns=("web*",)), None), (AutosignPolicy(tokens=("secret",)), "secret")],
    ids=["pattern", "token"],
)
def test_a_revoked_certname_is_not_autosigned_again(
    ca: CertificateAuthority, submit: Submit, policy: AutosignPolicy, token: str | None
) -> None:
    serial = _enrolled(ca, submit, "web01")
    ca.revoke("web01")
    ca.set_autosign(policy)

    assert submit("web01", token=token) == "requested"

    reason = _held(ca)["web01"]
    assert reason is not None
    assert f"serial {serial}" in reason and "was revoked" in reason
    assert "podium ca sign web01" in reason
    assert submit("web02", token=token) == "signed"  # a new name still is


def test_an_operator_signing_by_name_lets_a_revoked_certname_back(
    ca: CertificateAuthority, submit: Submit
) -> None:
    old = _enrolled(ca, submit, "web01")
    ca.revoke("web01")
    ca.set_autosign(AutosignPolicy(patterns=("*",)))
    submit("web01")

    new = x509.load_pem_x509_certificate(ca.sign("web01")).serial_number

    assert new != old
    assert [(i.certname, i.state, i.serial) for i in ca.list()] == [("web01", "signed", new)]
    ca.revoke("web01")
    assert submit("web01") == "requested"  # revoked again, held again


def test_holding_a_request_is_logged_with_the_reason(
    ca: CertificateAuthority, submit: Submit, caplog: pytest.LogCaptureFixture
) -> None:
    _enrolled(ca, submit, "web01")
    ca.revoke("web01")

    with caplog.at_level(logging.WARNING, logger="podium.pki.ca"):
        submit("web01")

    assert "the certificate request of web01 waits for an operator" in caplog.text
    assert "autosign does not let it back in" in caplog.text


def test_a_request_without_a_revoked_certificate_is_not_held(
    ca: CertificateAuthority, submit: Submit
) -> None:
    submit("web01")
    assert _held(ca) == {"web01": None}


def test_cleaning_forgets_the_certname_so_autosign_applies_again(
    ca: CertificateAuthority, submit: Submit
) -> None:
    serial = _enrolled(ca, submit, "web01")
    ca.set_autosign(AutosignPolicy(patterns=("web*",)))

    assert ca.clean("web01") == serial

    assert ca.list() == []
    assert ca.certificate("web01") is None
    crl = x509.load_pem_x509_crl(ca.crl())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert submit("web01") == "signed"


def test_cleaning_is_seen_by_another_process(ca: CertificateAuthority, submit: Submit) -> None:
    _enrolled(ca, submit, "web01")
    other = CertificateAuthority.open(ca.directory)
    assert [i.certname for i in other.list()] == ["web01"]
    ca.clean("web01")
    assert other.list() == []
    assert CertificateAuthority.open(ca.directory).list() == []


def test_cleaning_removes_a_pending_request(ca: CertificateAuthority, submit: Submit) -> None:
    submit("web01")
    assert ca.clean("web01") is None
    assert ca.list() == []


def test_cleaning_an_unknown_certname_is_not_found(ca: CertificateAuthority) -> None:
    with pytest.raises(NotFound, match="no certificate or request for ghost"):
        ca.clean("ghost")


# The status of a certname, as the CA API shows it


def test_the_status_of_a_certificate_has_its_dates_names_and_fingerprints(
    ca: CertificateAuthority, submit: Submit
) -> None:
    serial = _enrolled(ca, submit, "web01")
    status = ca.status("web01")
    cert = x509.load_pem_x509_certificate(ca.certificate("web01") or b"")
    assert (status.certname, status.state, status.serial) == ("web01", "signed", serial)
    assert status.not_before == cert.not_valid_before_utc
    assert status.not_after == cert.not_valid_after_utc
    assert status.dns_alt_names == ("web01",)
    assert set(status.fingerprints) == {"SHA1", "SHA256", "SHA512"}
    assert status.fingerprint == next(i.fingerprint for i in ca.list())
    ca.revoke("web01")
    assert ca.status("web01").state == "revoked"


def test_the_status_of_a_request_has_no_serial(ca: CertificateAuthority, submit: Submit) -> None:
    submit("web01")
    status = ca.status("web01")
    assert (status.state, status.serial, status.not_after) == ("requested", None, None)
    assert status.fingerprint == ca.list()[0].fingerprint


def test_the_status_of_an_unknown_certname_is_not_found(ca: CertificateAuthority) -> None:
    with pytest.raises(NotFound):
        ca.status("ghost")


def test_statuses_are_filtered_by_state(ca: CertificateAuthority, submit: Submit) -> None:
    _enrolled(ca, submit, "a")
    _enrolled(ca, submit, "b")
    ca.revoke("b")
    submit("b")
    submit("c")

    every = [(s.certname, s.state) for s in ca.statuses()]
    assert every == [("a", "signed"), ("b", "requested"), ("b", "revoked"), ("c", "requested")]
    assert [s.certname for s in ca.statuses("requested")] == ["b", "c"]
    assert [s.certname for s in ca.statuses("revoked")] == ["b"]
    assert [s.hold_reason is not None for s in ca.statuses("requested")] == [True, False]


# Bounds on requests that wait for an operator


def _csr(certname: str, token: str | None = None) -> bytes:
    return make_csr(certname, generate_key(), challenge_password=token)


def test_new_requests_beyond_the_pending_limit_are_unavailable(ca: CertificateAuthority) -> None:
    ca.set_autosign(AutosignPolicy(tokens=("secret",)))
    key = generate_key()
    ca.submit_csr("a", make_csr("a", key), max_pending=2)
    ca.submit_csr("b", _csr("b"), max_pending=2)

    with pytest.raises(Unavailable, match="holds 2 pending certificate requests") as raised:
        ca.submit_csr("c", _csr("c"), max_pending=2)

    assert raised.value.details["max_pending_csrs"] == 2
    # A request that replaces its own does not add one; what autosign signs never waits.
    assert ca.submit_csr("a", make_csr("a", key), max_pending=2) == "requested"
    assert ca.submit_csr("d", _csr("d", "secret"), max_pending=2) == "signed"
    ca.sign("a")
    assert ca.submit_csr("c", _csr("c"), max_pending=2) == "requested"


def test_admit_is_asked_before_a_request_is_stored_and_may_refuse_it(
    ca: CertificateAuthority,
) -> None:
    asked: list[str] = []

    def refuse() -> None:
        asked.append("asked")
        raise Unavailable("not now")

    ca.set_autosign(AutosignPolicy(patterns=("signed-*",)))
    assert ca.submit_csr("signed-1", _csr("signed-1"), admit=refuse) == "signed"
    assert asked == []
    with pytest.raises(Unavailable, match="not now"):
        ca.submit_csr("web01", _csr("web01"), admit=refuse)
    assert asked == ["asked"]
    assert ca.list()[0].certname == "signed-1" and len(ca.list()) == 1
