from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.errors import PKIError
from podium.pki.ca import CertificateAuthority
from podium.pki.revocation import CrlWatcher, RevocationList

Submit = Callable[..., str]


def _signed_and_revoked(ca: CertificateAuthority, submit: Submit, name: str) -> int:
    submit(name)
    ca.sign(name)
    return ca.revoke(name)


def test_a_new_crl_revokes_nothing(ca: CertificateAuthority) -> None:
    revocations = RevocationList.from_pem(ca.crl())
    assert revocations.serials == frozenset()
    assert not revocations.is_revoked(2)


def test_a_revoked_serial_is_in_the_list(ca: CertificateAuthority, submit: Submit) -> None:
    serial = _signed_and_revoked(ca, submit, "web01")
    submit("web02")
    ca.sign("web02")
    revocations = RevocationList.from_pem(ca.crl())
    assert revocations.serials == frozenset({serial})
    assert revocations.is_revoked(serial)
    assert not revocations.is_revoked(serial + 1)


def test_garbage_is_not_a_crl() -> None:
    with pytest.raises(PKIError, match="not a PEM certificate revocation list"):
        RevocationList.from_pem(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")


@given(st.binary(max_size=1024))
def test_arbitrary_bytes_as_a_crl_only_raise_pki_error(data: bytes) -> None:
    with pytest.raises(PKIError):
        RevocationList.from_pem(b"-----BEGIN X509 CRL-----\n" + data)


def test_the_watcher_reports_the_first_read_then_only_changes(
    ca: CertificateAuthority, submit: Submit
) -> None:
    watcher = CrlWatcher(ca.crl_path)
    assert watcher.refresh() == frozenset()
    assert watcher.refresh() is None
    serial = _signed_and_revoked(ca, submit, "web01")
    assert watcher.refresh() == frozenset({serial})
    assert watcher.refresh() is None


def test_the_watcher_waits_out_a_missing_or_partial_file(
    ca: CertificateAuthority, submit: Submit, tmp_path: Path
) -> None:
    path = tmp_path / "crl.pem"
    watcher = CrlWatcher(path)
    assert watcher.refresh() is None
    path.write_bytes(b"-----BEGIN X509 CRL-----\nMIIB")
    assert watcher.refresh() is None
    serial = _signed_and_revoked(ca, submit, "web01")
    path.write_bytes(ca.crl())
    assert watcher.refresh() == frozenset({serial})


def test_the_watcher_notices_a_file_replaced_with_the_same_size_and_time(
    ca: CertificateAuthority, submit: Submit, tmp_path: Path
) -> None:
    path = tmp_path / "crl.pem"
    path.write_bytes(ca.crl())
    watcher = CrlWatcher(path)
    assert watcher.refresh() == frozenset()
    before = path.stat()
    serial = _signed_and_revoked(ca, submit, "web01")
    replacement = tmp_path / "new.pem"
    replacement.write_bytes(ca.crl())
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(replacement, path)
    assert watcher.refresh() == frozenset({serial})
