"""What the CA reads and writes, without the directory: CSR checks and the builders of
certificates and CRLs. Pure functions; the time is passed in.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID

from podium.errors import ValidationError
from podium.pki.keys import PrivateKey

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Validity
CA_VALIDITY = timedelta(days=3650)
CERT_VALIDITY = timedelta(days=5 * 365)
CRL_VALIDITY = timedelta(days=7)
_BACKDATE = timedelta(days=1)  # certificates work on nodes whose clock is a little behind

# Limits
MAX_CSR_BYTES = 64 * 1024
_MIN_EC_BITS = 256
_MIN_RSA_BITS = 2048


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of DER bytes as colon-separated upper-case hex."""
    return hashlib.sha256(der).digest().hex(":").upper()


# Requests


def load_csr(certname: str, csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a CSR submitted for ``certname`` and check that the CA may sign it.

    It must be PEM, signed by its own key (an EC or RSA key of sensible size), and name
    exactly ``certname`` as its CN; else :class:`ValidationError` says which.
    """
    if len(csr_pem) > MAX_CSR_BYTES:
        raise ValidationError(
            f"the certificate request for {certname} is larger than {MAX_CSR_BYTES} bytes"
        )
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ValidationError(
            f"the certificate request for {certname} is not a PEM certificate request"
        ) from exc
    try:
        signature_ok = csr.is_signature_valid
    except Exception as exc:  # unsupported algorithms raise assorted errors
        raise ValidationError(
            f"the signature of the certificate request for {certname} cannot be checked: {exc}"
        ) from exc
    if not signature_ok:
        raise ValidationError(
            f"the certificate request for {certname} is not signed by its own key"
        )
    common_names = [attr.value for attr in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if common_names != [certname]:
        shown = ", ".join(repr(cn) for cn in common_names) or "missing"
        raise ValidationError(
            f"the certificate request's CN ({shown}) does not equal the certname "
            f"{certname!r}; they must be the same",
            details={"certname": certname},
        )
    request_public_key(certname, csr)
    return csr


def request_public_key(certname: str, csr: x509.CertificateSigningRequest) -> PublicKey:
    """The CSR's public key, if it is one Podium signs."""
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size >= _MIN_EC_BITS:
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
        return key
    raise ValidationError(
        f"the certificate request for {certname} has an unsupported key; "
        f"use EC P-256 or stronger, or RSA with at least {_MIN_RSA_BITS} bits"
    )


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The PKCS#9 challengePassword of a CSR, which carries an enrollment token."""
    try:
        attribute = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)
    except x509.AttributeNotFound:
        return None
    return attribute.value.decode("utf-8", errors="replace")


# Certificates


def build_ca_certificate(key: PrivateKey, name: str, now: datetime) -> x509.Certificate:
    """A self-signed CA certificate, serial 1, that may sign leaf certificates only."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def build_certificate(
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    certname: str,
    public_key: PublicKey,
    serial: int,
    now: datetime,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[IPAddress] = (),
    server: bool = False,
) -> x509.Certificate:
    """A certificate for ``certname``, valid five years (or until the CA expires), naming
    ``certname`` and the extra names as alternatives. Only ``server`` certificates (the
    server's and brokers', issued directly) may authenticate the server end of TLS: a
    node's certificate cannot pose as the server to other nodes."""
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    alt_names: list[x509.GeneralName] = [x509.DNSName(certname)]
    alt_names += [x509.DNSName(name) for name in dns_names if name != certname]
    alt_names += [x509.IPAddress(address) for address in ip_addresses]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, certname)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + CERT_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(
                digital_signature=True,
                # RSA key exchange (TLS 1.2) encrypts with the key; ECDHE only signs.
                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(usages),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def build_crl(
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    revoked: Mapping[int, datetime],
    number: int,
    last_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A CRL listing the ``revoked`` serials with their revocation dates."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(last_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
