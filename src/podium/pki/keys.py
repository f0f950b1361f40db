"""The agent's side of enrollment: a private key and a certificate signing request.

This module is imported by the agent, so it needs nothing beyond ``cryptography``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID, NameOID

from podium.errors import ValidationError
from podium.pki.names import validate_certname

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The key types Podium signs with and accepts: EC (P-256 and up) and RSA (2048 and up)."""

# PKCS#9 bounds challengePassword (a DirectoryString) at 255 characters.
_MAX_CHALLENGE_PASSWORD = 255


def generate_key() -> bytes:
    """A new EC P-256 private key as unencrypted PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(key_pem: bytes) -> PrivateKey:
    """Parse an unencrypted PEM private key of a type Podium accepts."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"cannot read the private key: {exc}") from exc
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise ValidationError(f"an RSA key must have at least 2048 bits, not {key.key_size}")
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValidationError(
            f"a {type(key).__name__} cannot be used; use an EC or an RSA key instead"
        )
    return key


def make_csr(certname: str, key_pem: bytes, *, challenge_password: str | None = None) -> bytes:
    """A PEM certificate signing request for ``certname``, signed with ``key_pem``.

    The subject is ``CN=<certname>`` with a ``DNS:<certname>`` subject alternative name.
    ``challenge_password`` travels in the PKCS#9 challengePassword attribute; it is how
    an enrollment token reaches the CA's autosign policy.
    """
    validate_certname(certname)
    key = load_private_key(key_pem)
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, certname)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(certname)]), critical=False)
    )
    if challenge_password is not None:
        if not challenge_password or len(challenge_password) > _MAX_CHALLENGE_PASSWORD:
            raise ValidationError(
                f"a challenge password must be 1 to {_MAX_CHALLENGE_PASSWORD} characters long"
            )
        builder = builder.add_attribute(
            AttributeOID.CHALLENGE_PASSWORD, challenge_password.encode("utf-8")
        )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def certificate_matches_key(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the PEM certificate is for the public half of ``key_pem``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        cert.public_key().public_bytes(*raw)
        == load_private_key(key_pem).public_key().public_bytes(*raw)
    )
