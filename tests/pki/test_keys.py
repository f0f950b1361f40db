from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AttributeOID, NameOID

from podium.errors import ValidationError
from podium.pki.keys import certificate_matches_key, generate_key, load_private_key, make_csr


def test_generated_key_is_unencrypted_pkcs8_p256() -> None:
    pem = generate_key()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"


def test_each_generated_key_is_new() -> None:
    assert generate_key() != generate_key()


def test_csr_names_the_certname_in_cn_and_san(key_pem: bytes) -> None:
    csr = x509.load_pem_x509_csr(make_csr("web01.example.com", key_pem))
    assert csr.is_signature_valid
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [attr.value for attr in cn] == ["web01.example.com"]
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["web01.example.com"]
    private = serialization.load_pem_private_key(key_pem, password=None)
    assert csr.public_key() == private.public_key()


def test_challenge_password_round_trips_through_the_csr(key_pem: bytes) -> None:
    csr = x509.load_pem_x509_csr(make_csr("web01", key_pem, challenge_password="s3cret-tøken"))
    attribute = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    assert attribute.value.decode() == "s3cret-tøken"


def test_csr_without_challenge_password_has_no_attribute(key_pem: bytes) -> None:
    csr = x509.load_pem_x509_csr(make_csr("web01", key_pem))
    with pytest.raises(x509.AttributeNotFound):
        csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)


@pytest.mark.parametrize("password", ["", "x" * 256])
def test_challenge_password_must_be_1_to_255_characters(key_pem: bytes, password: str) -> None:
    with pytest.raises(ValidationError, match="challenge password"):
        make_csr("web01", key_pem, challenge_password=password)


def test_csr_refuses_an_invalid_certname(key_pem: bytes) -> None:
    with pytest.raises(ValidationError, match="invalid certname"):
        make_csr("../web01", key_pem)


def test_csr_can_be_made_with_an_rsa_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert x509.load_pem_x509_csr(make_csr("web01", pem)).is_signature_valid


def test_garbage_is_not_a_private_key() -> None:
    with pytest.raises(ValidationError, match="cannot read the private key"):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")


def test_an_ed25519_key_is_refused() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValidationError, match="use an EC or an RSA key"):
        load_private_key(pem)


def test_a_certificate_matches_only_the_key_it_was_issued_for(tmp_path: Path) -> None:
    from podium.pki.ca import CertificateAuthority

    ca = CertificateAuthority.init(tmp_path / "ca")
    key, other = generate_key(), generate_key()
    ca.submit_csr("web01", make_csr("web01", key))
    cert = ca.sign("web01")
    assert certificate_matches_key(cert, key)
    assert not certificate_matches_key(cert, other)
    assert not certificate_matches_key(b"not a certificate", key)
