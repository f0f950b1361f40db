from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.errors import Conflict, NotFound, ValidationError
from podium.pki import ca as ca_module
from podium.pki.ca import AutosignPolicy, CertificateAuthority
from podium.pki.keys import generate_key, make_csr

Submit = Callable[..., str]  # the conftest's submit(certname, token=None) fixture
YEAR = timedelta(days=365)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _states(ca: CertificateAuthority) -> dict[tuple[str, str], int | None]:
    return {(info.certname, info.state): info.serial for info in ca.list()}


# Creating and opening


def test_init_lays_out_the_directory_with_a_private_key(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", name="Example CA")
    directory = tmp_path / "ca"
    for name in ("ca_crt.pem", "ca_key.pem", "ca_crl.pem", "serial", "requests", "signed"):
        assert (directory / name).exists(), name
    assert stat.S_IMODE((directory / "ca_key.pem").stat().st_mode) == 0o600
    assert ca.ca_cert_path == directory / "ca_crt.pem"
    assert ca.crl_path == directory / "ca_crl.pem"
    assert ca.ca_certificate() == ca.ca_cert_path.read_bytes()


def test_the_ca_certificate_is_a_self_signed_ten_year_ca(ca: CertificateAuthority) -> None:
    cert = _cert(ca.ca_certificate())
    assert cert.subject.rfc4514_string() == "CN=Podium CA"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 10 * YEAR <= lifetime <= 10 * YEAR + timedelta(days=5)


def test_a_new_ca_publishes_an_empty_signed_crl(ca: CertificateAuthority) -> None:
    crl = x509.load_pem_x509_crl(ca.crl())
    assert len(crl) == 0
    assert crl.is_signature_valid(_cert(ca.ca_certificate()).public_key())  # type: ignore[arg-type]


def test_init_refuses_to_overwrite_a_ca(ca: CertificateAuthority) -> None:
    with pytest.raises(Conflict, match="already exists"):
        CertificateAuthority.init(ca.directory)


def test_open_without_a_ca_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="run `podium ca init`"):
        CertificateAuthority.open(tmp_path / "nothing")


def test_open_finds_the_same_ca(ca: CertificateAuthority) -> None:
    again = CertificateAuthority.open(ca.directory)
    assert again.ca_certificate() == ca.ca_certificate()
    assert again.fingerprint == ca.fingerprint


def test_fingerprint_is_colon_separated_sha256(ca: CertificateAuthority) -> None:
    parts = ca.fingerprint.split(":")
    assert len(parts) == 32
    assert all(len(part) == 2 and part == part.upper() for part in parts)


# Requests


def test_a_valid_request_waits_for_an_operator(ca: CertificateAuthority, key_pem: bytes) -> None:
    csr_pem = make_csr("web01", key_pem)
    assert ca.submit_csr("web01", csr_pem) == "requested"
    [info] = ca.list()
    assert (info.certname, info.state, info.serial, info.not_after) == (
        "web01",
        "requested",
        None,
        None,
    )
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert info.fingerprint == ca_module.fingerprint(der)
    assert ca.certificate("web01") is None


def test_a_request_whose_cn_is_not_the_certname_is_refused(
    ca: CertificateAuthority, key_pem: bytes
) -> None:
    with pytest.raises(ValidationError, match=r"CN \('web01'\) does not equal the certname"):
        ca.submit_csr("db01", make_csr("web01", key_pem))
    assert ca.list() == []


def test_a_request_that_is_not_pem_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(ValidationError, match="not a PEM certificate request"):
        ca.submit_csr("web01", b"hello")


def test_a_request_with_a_broken_signature_is_refused(
    ca: CertificateAuthority, key_pem: bytes
) -> None:
    csr = x509.load_pem_x509_csr(make_csr("web01", key_pem))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ValidationError, match="not signed by its own key"):
        ca.submit_csr("web01", tampered)


def test_a_request_for_an_invalid_certname_is_refused(
    ca: CertificateAuthority, key_pem: bytes
) -> None:
    with pytest.raises(ValidationError, match="invalid certname"):
        ca.submit_csr("../../etc/cron.d/x", make_csr("web01", key_pem))


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_as_a_request_only_raise_validation_error(
    ca: CertificateAuthority, data: bytes
) -> None:
    with pytest.raises(ValidationError):
        ca.submit_csr("web01", b"-----BEGIN CERTIFICATE REQUEST-----\n" + data)


def test_a_pending_request_is_not_swapped_for_another_key(
    ca: CertificateAuthority, submit: Submit
) -> None:
    key = generate_key()
    assert ca.submit_csr("web01", make_csr("web01", key)) == "requested"
    assert ca.submit_csr("web01", make_csr("web01", key)) == "requested"  # the same key: fine
    first = ca.list()[0].fingerprint
    with pytest.raises(Conflict, match="with another key is already pending"):
        submit("web01")
    [info] = ca.list()
    assert info.state == "requested" and info.fingerprint == first


# Signing


def test_sign_issues_a_five_year_client_certificate(
    ca: CertificateAuthority, submit: Submit
) -> None:
    submit("web01.example.com")
    cert = _cert(ca.sign("web01.example.com"))
    cert.verify_directly_issued_by(_cert(ca.ca_certificate()))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "web01.example.com"
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["web01.example.com"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH}  # a node cannot pose as a server
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert 5 * YEAR - timedelta(days=1) <= lifetime <= 5 * YEAR
    assert ca.certificate("web01.example.com") == cert.public_bytes(serialization.Encoding.PEM)


def test_sign_moves_the_request_to_signed(ca: CertificateAuthority, submit: Submit) -> None:
    submit("web01")
    serial = _cert(ca.sign("web01")).serial_number
    [info] = ca.list()
    assert (info.certname, info.state, info.serial) == ("web01", "signed", serial)
    assert info.not_after == _cert(ca.certificate("web01") or b"").not_valid_after_utc
    assert not (ca.directory / "requests" / "web01.pem").exists()


def test_sign_without_a_request_is_not_found(ca: CertificateAuthority) -> None:
    with pytest.raises(NotFound, match="no certificate request is pending for web01"):
        ca.sign("web01")


def test_serials_are_unique_and_increasing(ca: CertificateAuthority, submit: Submit) -> None:
    serials = []
    for n in range(5):
        submit(f"node{n}")
        serials.append(_cert(ca.sign(f"node{n}")).serial_number)
    assert serials == sorted(set(serials))
    assert serials[0] > _cert(ca.ca_certificate()).serial_number


def test_a_signed_certname_cannot_enroll_again(ca: CertificateAuthority, submit: Submit) -> None:
    submit("web01")
    ca.sign("web01")
    with pytest.raises(Conflict, match="already has a signed certificate"):
        submit("web01")


def test_a_revoked_certname_can_enroll_again(ca: CertificateAuthority, submit: Submit) -> None:
    submit("web01")
    old = _cert(ca.sign("web01")).serial_number
    ca.revoke("web01")
    assert submit("web01") == "requested"
    new = _cert(ca.sign("web01")).serial_number
    assert new != old
    assert _states(ca) == {("web01", "signed"): new}


def test_the_ca_key_is_read_once_per_object(ca: CertificateAuthority, submit: Submit) -> None:
    (ca.directory / "ca_key.pem").rename(ca.directory / "elsewhere.pem")
    submit("web01")
    assert ca.sign("web01")


def test_another_object_sees_what_this_one_signed(ca: CertificateAuthority, submit: Submit) -> None:
    other = CertificateAuthority.open(ca.directory)
    assert other.list() == []
    submit("web01")
    ca.sign("web01")
    assert _states(other) == _states(ca)
    submit("web02")
    other.sign("web02")
    assert {name for name, _ in _states(ca)} == {"web01", "web02"}


# Autosign


def test_autosign_signs_certnames_matching_a_pattern(
    ca: CertificateAuthority, submit: Submit
) -> None:
    ca.set_autosign(AutosignPolicy(patterns=("*.web.example.com",)))
    assert submit("a.web.example.com") == "signed"
    assert submit("db.example.com") == "requested"
    assert ca.certificate("a.web.example.com") is not None
    assert ca.certificate("db.example.com") is None


def test_autosign_star_signs_everything(tmp_path: Path) -> None:
    ca = CertificateAuthority.init(tmp_path / "ca", autosign=AutosignPolicy(patterns=("*",)))
    assert ca.submit_csr("anything", make_csr("anything", generate_key())) == "signed"


def test_autosign_signs_a_request_carrying_a_token(
    ca: CertificateAuthority, submit: Submit
) -> None:
    ca.set_autosign(AutosignPolicy(tokens=("alpha", "bravo")))
    assert submit("web01", token="bravo") == "signed"
    assert submit("web02", token="charlie") == "requested"
    assert submit("web03") == "requested"
    assert _states(ca) == {
        ("web01", "signed"): 2,
        ("web02", "requested"): None,
        ("web03", "requested"): None,
    }


def test_the_autosign_policy_is_persisted(tmp_path: Path) -> None:
    policy = AutosignPolicy(patterns=("*.lab",), tokens=("t0k3n",))
    CertificateAuthority.init(tmp_path / "ca", autosign=policy)
    assert CertificateAuthority.open(tmp_path / "ca").autosign == policy
    assert stat.S_IMODE((tmp_path / "ca" / "autosign.json").stat().st_mode) == 0o600


def test_a_running_ca_follows_a_policy_set_elsewhere(
    ca: CertificateAuthority, submit: Submit
) -> None:
    assert submit("web01") == "requested"
    CertificateAuthority.open(ca.directory).set_autosign(AutosignPolicy(patterns=("web*",)))
    assert submit("web02") == "signed"


def test_autosign_policy_matching() -> None:
    policy = AutosignPolicy(patterns=("web*", "db?.lab"), tokens=("secret",))
    assert policy.allows("web01", None)
    assert policy.allows("db1.lab", None)
    assert not policy.allows("db10.lab", None)
    assert policy.allows("mail", "secret")
    assert not policy.allows("mail", "Secret")
    assert not policy.allows("mail", None)
    assert not AutosignPolicy().allows("web01", "")


def test_autosign_tokens_stay_out_of_repr() -> None:
    assert "hunter2" not in repr(AutosignPolicy(tokens=("hunter2",)))


def test_an_empty_autosign_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="token"):
        AutosignPolicy(tokens=("",))


# Issuing directly


def test_issue_creates_a_key_and_a_certificate_with_extra_names(
    ca: CertificateAuthority,
) -> None:
    cert_pem, key_pem = ca.issue(
        "podium-server", dns_names=["localhost", "Build.Example.COM"], ip_addresses=["127.0.0.1"]
    )
    cert = _cert(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "podium-server",
        "localhost",
        "build.example.com",
    ]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert _states(ca) == {("podium-server", "signed"): cert.serial_number}


def test_issue_refuses_a_bad_ip_address(ca: CertificateAuthority) -> None:
    with pytest.raises(ValidationError, match="not an IP address"):
        ca.issue("podium-server", ip_addresses=["localhost"])


def test_issue_refuses_a_name_that_has_a_certificate(ca: CertificateAuthority) -> None:
    ca.issue("podium-server")
    with pytest.raises(Conflict):
        ca.issue("podium-server")


# Revocation


def test_revoke_lists_the_serial_in_a_new_crl(ca: CertificateAuthority, submit: Submit) -> None:
    submit("web01")
    submit("web02")
    ca.sign("web01")
    ca.sign("web02")
    serial = ca.revoke("web01")
    assert _states(ca)[("web01", "revoked")] == serial
    crl = x509.load_pem_x509_crl(ca.crl())
    assert [revoked.serial_number for revoked in crl] == [serial]
    assert crl.is_signature_valid(_cert(ca.ca_certificate()).public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - datetime.now(UTC) > timedelta(days=6)


def test_each_new_crl_has_a_higher_number(ca: CertificateAuthority, submit: Submit) -> None:
    numbers = []
    for name in ("web01", "web02"):
        submit(name)
        ca.sign(name)
        ca.revoke(name)
        crl = x509.load_pem_x509_crl(ca.crl())
        numbers.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    assert numbers[0] < numbers[1]


def test_revoking_twice_returns_the_same_serial(ca: CertificateAuthority, submit: Submit) -> None:
    submit("web01")
    ca.sign("web01")
    assert ca.revoke("web01") == ca.revoke("web01")
    assert len(x509.load_pem_x509_crl(ca.crl())) == 1


def test_revoking_an_unknown_certname_is_not_found(
    ca: CertificateAuthority, submit: Submit
) -> None:
    submit("web01")  # requested only
    with pytest.raises(NotFound, match="web01 has no signed certificate"):
        ca.revoke("web01")


def test_a_crl_close_to_expiry_is_renewed(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = x509.load_pem_x509_crl(ca.crl()).next_update_utc
    assert before is not None
    later = datetime.now(UTC) + timedelta(days=5)
    monkeypatch.setattr(ca_module, "_now", lambda: later.replace(microsecond=0))
    after = x509.load_pem_x509_crl(ca.crl()).next_update_utc
    assert after is not None and after > before + timedelta(days=4)


# Concurrency

_SIGN_SCRIPT = """
import sys
from pathlib import Path
from cryptography import x509
from podium.pki.ca import CertificateAuthority
ca = CertificateAuthority.open(Path(sys.argv[1]))
sys.stdin.read()  # start together
for name in sys.argv[2:]:
    print(x509.load_pem_x509_certificate(ca.sign(name)).serial_number)
"""


def test_two_processes_signing_at_once_use_distinct_serials(
    ca: CertificateAuthority, submit: Submit
) -> None:
    names = [f"node{n:03}" for n in range(120)]
    for name in names:
        submit(name)
    halves = [names[0::2], names[1::2]]
    env = {**os.environ, "PYTHONPATH": str(Path(ca_module.__file__).parents[2])}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _SIGN_SCRIPT, str(ca.directory), *half],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for half in halves
    ]
    outputs = [process.communicate("go", timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    serials = [int(line) for output in outputs for line in output.split()]
    assert len(serials) == len(names)
    assert len(set(serials)) == len(names)
    listed = {info.certname: info.serial for info in ca.list()}
    assert sorted(listed) == names
    assert set(listed.values()) == set(serials)


def test_threads_sharing_one_ca_use_distinct_serials(
    ca: CertificateAuthority, submit: Submit
) -> None:
    names = [f"node{n:03}" for n in range(60)]
    for name in names:
        submit(name)
    serials: list[int] = []
    lock = threading.Lock()

    def sign(part: list[str]) -> None:
        for name in part:
            serial = _cert(ca.sign(name)).serial_number
            with lock:
                serials.append(serial)

    threads = [threading.Thread(target=sign, args=(names[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(serials)) == len(names)
