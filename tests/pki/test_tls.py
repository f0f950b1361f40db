from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from podium.errors import PKIError, ValidationError
from podium.pki.ca import CertificateAuthority
from podium.pki.tls import client_context, peer_identity, server_context

Submit = Callable[..., str]


@dataclass
class Identity:
    cert: Path
    key: Path
    serial: int


def _issue(
    ca: CertificateAuthority, certname: str, directory: Path, **names: list[str]
) -> Identity:
    cert_pem, key_pem = ca.issue(certname, **names)
    cert, key = directory / f"{certname}.crt", directory / f"{certname}.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return Identity(cert, key, x509.load_pem_x509_certificate(cert_pem).serial_number)


@dataclass
class Outcome:
    server_peer: tuple[str, int] | None = None
    client_peer: tuple[str, int] | None = None
    server_error: BaseException | None = None
    client_error: BaseException | None = None


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "podium-server"
) -> Outcome:
    """Run a TLS handshake over a socket pair and exchange one byte each way."""
    outcome = Outcome()
    server_sock, client_sock = socket.socketpair()
    server_sock.settimeout(10)
    client_sock.settimeout(10)

    def serve() -> None:
        try:
            with server.wrap_socket(server_sock, server_side=True) as tls:
                if tls.getpeercert():
                    outcome.server_peer = peer_identity(tls)
                tls.sendall(b"s")
                tls.recv(1)
        except (OSError, PKIError) as exc:
            outcome.server_error = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_sock, server_hostname=hostname) as tls:
            outcome.client_peer = peer_identity(tls)
            if tls.recv(1) != b"s":
                raise ConnectionError("the server closed the connection")
            tls.sendall(b"c")
    except OSError as exc:
        outcome.client_error = exc
    finally:
        thread.join(10)
        server_sock.close()
        client_sock.close()
    return outcome


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def server(ca: CertificateAuthority, certs: Path) -> Identity:
    return _issue(ca, "podium-server", certs, dns_names=["localhost"], ip_addresses=["127.0.0.1"])


def _server_context(
    ca: CertificateAuthority, server: Identity, **options: object
) -> ssl.SSLContext:
    return server_context(
        cert=server.cert,
        key=server.key,
        ca=ca.ca_cert_path,
        require_client_cert=True,
        **options,  # type: ignore[arg-type]
    )


def _verify_message(error: BaseException | None) -> str:
    assert isinstance(error, ssl.SSLCertVerificationError), error
    return str(error.verify_message)


def test_a_client_with_a_signed_certificate_is_accepted(
    ca: CertificateAuthority, server: Identity, certs: Path
) -> None:
    node = _issue(ca, "web01.example.com", certs)
    client = client_context(ca=ca.ca_cert_path, cert=node.cert, key=node.key)
    outcome = _handshake(_server_context(ca, server, crl=ca.crl_path), client)
    assert outcome.server_error is None and outcome.client_error is None
    assert outcome.server_peer == ("web01.example.com", node.serial)
    assert outcome.client_peer == ("podium-server", server.serial)


def test_a_client_from_another_ca_is_refused(
    ca: CertificateAuthority, server: Identity, certs: Path, tmp_path: Path
) -> None:
    other = CertificateAuthority.init(tmp_path / "other-ca")
    intruder = _issue(other, "web01.example.com", certs)
    client = client_context(ca=ca.ca_cert_path, cert=intruder.cert, key=intruder.key)
    outcome = _handshake(_server_context(ca, server), client)
    assert "unable to get local issuer certificate" in _verify_message(outcome.server_error)
    assert outcome.server_peer is None


def test_a_client_without_a_certificate_is_refused_when_one_is_required(
    ca: CertificateAuthority, server: Identity
) -> None:
    outcome = _handshake(_server_context(ca, server), client_context(ca=ca.ca_cert_path))
    assert isinstance(outcome.server_error, ssl.SSLError)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in str(outcome.server_error)


def test_a_revoked_client_is_refused_when_the_server_has_the_crl(
    ca: CertificateAuthority, server: Identity, certs: Path
) -> None:
    node = _issue(ca, "web01.example.com", certs)
    ca.revoke("web01.example.com")
    client = client_context(ca=ca.ca_cert_path, cert=node.cert, key=node.key)

    without_crl = _handshake(_server_context(ca, server), client)
    assert without_crl.server_peer == ("web01.example.com", node.serial)

    with_crl = _handshake(_server_context(ca, server, crl=ca.crl_path), client)
    assert _verify_message(with_crl.server_error) == "certificate revoked"
    assert with_crl.server_peer is None


def test_the_client_checks_the_server_name(
    ca: CertificateAuthority, server: Identity, certs: Path
) -> None:
    node = _issue(ca, "web01.example.com", certs)
    client = client_context(ca=ca.ca_cert_path, cert=node.cert, key=node.key)
    assert _handshake(_server_context(ca, server), client, "localhost").client_error is None
    outcome = _handshake(_server_context(ca, server), client, "evil.example.com")
    assert "Hostname mismatch" in _verify_message(outcome.client_error)


def test_the_client_refuses_a_server_from_another_ca(
    ca: CertificateAuthority, server: Identity, tmp_path: Path
) -> None:
    other = CertificateAuthority.init(tmp_path / "other-ca")
    client = client_context(ca=other.ca_cert_path)
    outcome = _handshake(
        server_context(
            cert=server.cert, key=server.key, ca=ca.ca_cert_path, require_client_cert=False
        ),
        client,
    )
    assert _verify_message(outcome.client_error) in {
        "self-signed certificate in certificate chain",
        "unable to get local issuer certificate",
    }


def test_an_optional_client_certificate_may_be_absent(
    ca: CertificateAuthority, server: Identity
) -> None:
    context = server_context(
        cert=server.cert, key=server.key, ca=ca.ca_cert_path, require_client_cert=False
    )
    assert context.verify_mode == ssl.CERT_OPTIONAL
    outcome = _handshake(context, client_context(ca=ca.ca_cert_path))
    assert outcome.server_error is None and outcome.client_error is None
    assert outcome.server_peer is None


def test_contexts_require_tls_1_2_or_later(ca: CertificateAuthority, server: Identity) -> None:
    context = _server_context(ca, server, crl=ca.crl_path)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    client = client_context(ca=ca.ca_cert_path)
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED


def test_missing_files_are_reported_as_pki_errors(
    ca: CertificateAuthority, server: Identity, tmp_path: Path
) -> None:
    with pytest.raises(PKIError, match="cannot load the CA certificate"):
        client_context(ca=tmp_path / "missing.pem")
    with pytest.raises(PKIError, match="cannot load the certificate"):
        server_context(
            cert=tmp_path / "missing.crt",
            key=server.key,
            ca=ca.ca_cert_path,
            require_client_cert=True,
        )
    with pytest.raises(PKIError, match="cannot load the CRL"):
        _server_context(ca, server, crl=tmp_path / "missing.crl")


def test_a_key_without_its_certificate_is_refused(
    ca: CertificateAuthority, server: Identity
) -> None:
    with pytest.raises(ValidationError, match="without its certificate"):
        client_context(ca=ca.ca_cert_path, key=server.key)


class _FakePeer:
    def __init__(self, cert: dict[str, object] | None) -> None:
        self.cert = cert

    def getpeercert(self) -> dict[str, object] | None:
        return self.cert


def test_peer_identity_reads_cn_and_hex_serial() -> None:
    peer = _FakePeer(
        {"subject": ((("countryName", "NL"),), (("commonName", "web01"),)), "serialNumber": "1F"}
    )
    assert peer_identity(peer) == ("web01", 31)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cert",
    [
        None,
        {},
        {"subject": (), "serialNumber": "01"},
        {"subject": ((("commonName", "a"),), (("commonName", "b"),)), "serialNumber": "01"},
        {"subject": ((("commonName", "web01"),),)},
    ],
)
def test_peer_identity_refuses_incomplete_certificates(cert: dict[str, object] | None) -> None:
    with pytest.raises(PKIError):
        peer_identity(_FakePeer(cert))  # type: ignore[arg-type]


def test_peer_identity_refuses_a_cn_that_is_not_a_certname() -> None:
    peer = _FakePeer({"subject": ((("commonName", "../web01"),),), "serialNumber": "01"})
    with pytest.raises(ValidationError):
        peer_identity(peer)  # type: ignore[arg-type]
