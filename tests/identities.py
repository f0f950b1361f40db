"""Certificates for tests that open real TLS connections."""

from __future__ import annotations

import ssl
from pathlib import Path

from podium.pki.ca import CertificateAuthority
from podium.pki.tls import client_context


class Identities:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = CertificateAuthority.init(root / "ca")

    def files(self, certname: str, **names: list[str]) -> tuple[Path, Path]:
        cert, key = self.root / f"{certname}.pem", self.root / f"{certname}.key"
        if not cert.exists():
            pem, key_pem = self.ca.issue(certname, **names)
            cert.write_bytes(pem)
            key.write_bytes(key_pem)
        return cert, key

    def context(self, certname: str | None) -> ssl.SSLContext:
        if certname is None:
            return client_context(ca=self.ca.ca_cert_path)
        cert, key = self.files(certname)
        return client_context(ca=self.ca.ca_cert_path, cert=cert, key=key)
