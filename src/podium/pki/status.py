"""What the CA says about one certname: the fields of Puppet's ``certificate_status``.

Pure functions from a certificate or a request to a :class:`CertStatus`; the CA reads
the files, the API turns a status into JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

State = Literal["requested", "signed", "revoked"]
STATES: tuple[State, ...] = ("requested", "signed", "revoked")

_DIGESTS = (("SHA1", hashlib.sha1), ("SHA256", hashlib.sha256), ("SHA512", hashlib.sha512))

# How Puppet's CA API writes a time: "2031-05-17T20:54:35UTC".
_PUPPET_TIME = "%Y-%m-%dT%H:%M:%SUTC"


@dataclass(frozen=True)
class CertStatus:
    """A pending request or an issued certificate of one certname.

    ``hold_reason`` is set on a request that autosign will not sign whatever the
    policy says (its certname's certificate was revoked): only an operator can.
    """

    certname: str
    state: State
    # Digest name (SHA1, SHA256, SHA512) -> upper-case hex with colons, of the DER.
    fingerprints: Mapping[str, str] = field(default_factory=dict)
    dns_alt_names: tuple[str, ...] = ()
    ip_alt_names: tuple[str, ...] = ()
    serial: int | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    hold_reason: str | None = None

    @property
    def fingerprint(self) -> str:
        """The SHA-256 fingerprint, the one Podium shows."""
        return self.fingerprints.get("SHA256", "")


def fingerprints(der: bytes) -> dict[str, str]:
    """The SHA-1, SHA-256 and SHA-512 fingerprints of DER bytes, as Puppet gives them."""
    return {name: digest(der).digest().hex(":").upper() for name, digest in _DIGESTS}


def of_certificate(cert: x509.Certificate, state: State) -> CertStatus:
    """The status of an issued certificate; ``state`` is ``signed`` or ``revoked``."""
    dns, ips = _alt_names(cert.extensions)
    return CertStatus(
        certname=_common_name(cert.subject),
        state=state,
        fingerprints=fingerprints(cert.public_bytes(serialization.Encoding.DER)),
        dns_alt_names=dns,
        ip_alt_names=ips,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def of_request(
    certname: str, csr: x509.CertificateSigningRequest, *, hold_reason: str | None = None
) -> CertStatus:
    """The status of a pending request."""
    dns, ips = _alt_names(csr.extensions)
    return CertStatus(
        certname=certname,
        state="requested",
        fingerprints=fingerprints(csr.public_bytes(serialization.Encoding.DER)),
        dns_alt_names=dns,
        ip_alt_names=ips,
        hold_reason=hold_reason,
    )


def hold_reason(certname: str, serial: int) -> str:
    """Why a request for a revoked certname waits for an operator."""
    return (
        f"the certificate of {certname} (serial {serial}) was revoked, so autosign does not "
        f"let it back in: sign it by name (`podium ca sign {certname}`) if it should be"
    )


def format_time(when: datetime) -> str:
    """A time as Puppet's CA API writes it (always UTC)."""
    return when.astimezone(UTC).strftime(_PUPPET_TIME)


def parse_time(text: str) -> datetime:
    """A time written by :func:`format_time` (or as ISO 8601)."""
    try:
        return datetime.strptime(text, _PUPPET_TIME).replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromisoformat(text)


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


def _alt_names(extensions: x509.Extensions) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = tuple(san.get_values_for_type(x509.DNSName))
    ips = tuple(str(address) for address in san.get_values_for_type(x509.IPAddress))
    return dns, ips
