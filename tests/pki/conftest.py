from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from podium.pki.ca import CertificateAuthority
from podium.pki.keys import generate_key, make_csr

Submit = Callable[..., str]


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca")


@pytest.fixture
def key_pem() -> bytes:
    return generate_key()


@pytest.fixture
def submit(ca: CertificateAuthority) -> Submit:
    """Submit a CSR made with a fresh key: ``submit(certname, token=None) -> state``."""

    def submit(certname: str, token: str | None = None) -> str:
        csr = make_csr(certname, generate_key(), challenge_password=token)
        return ca.submit_csr(certname, csr)

    return submit
