"""TLS contexts for mutual authentication with the CA's certificates.

A node's identity is the CN of the certificate it presents; the broker and the server
learn it with :func:`peer_identity` once the handshake has verified the chain.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from podium.errors import PKIError, ValidationError
from podium.pki.names import validate_certname


def server_context(
    *,
    cert: Path,
    key: Path,
    ca: Path,
    crl: Path | None = None,
    require_client_cert: bool,
) -> ssl.SSLContext:
    """A TLS 1.2+ server context that verifies client certificates against ``ca``.

    With ``crl``, a client whose certificate is listed there fails the handshake.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    _load_identity(context, cert, key)
    _load_trust(context, ca, "CA certificate")
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if crl is not None:
        _load_trust(context, crl, "CRL")
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


def client_context(
    *, ca: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A TLS 1.2+ client context that verifies the server against ``ca`` and its name.

    ``cert`` and ``key`` are the client's own identity, for mutual TLS.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    _harden(context)
    _load_trust(context, ca, "CA certificate")
    if cert is not None:
        _load_identity(context, cert, key)
    elif key is not None:
        raise ValidationError("a client key was given without its certificate")
    return context


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> tuple[str, int]:
    """The certname (the CN) and serial of the verified certificate the peer presented."""
    peer = ssl_object.getpeercert()
    if not peer:
        raise PKIError("the peer presented no verified certificate")
    subject: Any = peer.get("subject", ())
    common_names = [
        value for rdn in subject for attribute, value in rdn if attribute == "commonName"
    ]
    if len(common_names) != 1:
        raise PKIError("the peer's certificate must have exactly one common name (CN)")
    serial_hex = peer.get("serialNumber")
    if not isinstance(serial_hex, str):
        raise PKIError("the peer's certificate has no serial number")
    try:
        serial = int(serial_hex, 16)
    except ValueError as exc:
        raise PKIError(f"the peer's certificate serial {serial_hex!r} is not hex") from exc
    return validate_certname(common_names[0]), serial


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.verify_flags |= ssl.VERIFY_X509_STRICT


def _load_identity(context: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except FileNotFoundError as exc:
        raise PKIError(f"cannot load the certificate {cert}: {exc.filename} is missing") from exc
    except (OSError, ssl.SSLError) as exc:
        raise PKIError(f"cannot load the certificate {cert} and its key {key}: {exc}") from exc


def _load_trust(context: ssl.SSLContext, path: Path, what: str) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError as exc:
        raise PKIError(f"cannot load the {what} {path}: the file is missing") from exc
    except (OSError, ssl.SSLError) as exc:
        raise PKIError(f"cannot load the {what} {path}: {exc}") from exc
