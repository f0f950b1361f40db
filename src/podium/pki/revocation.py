"""Which serials the CA has revoked, read from its CRL file.

The broker keeps its connections for days; re-checking their serials against the CRL
lets it drop a node the moment an operator revokes it, not at the next handshake.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509

from podium.errors import PKIError


class RevocationList:
    """The revoked serials of one CRL. The CRL's signature is not checked here."""

    def __init__(self, serials: frozenset[int]) -> None:
        self.serials = serials

    @classmethod
    def from_pem(cls, pem: bytes) -> RevocationList:
        """Parse a PEM CRL; :class:`PKIError` if it is not one."""
        try:
            crl = x509.load_pem_x509_crl(pem)
        except ValueError as exc:
            raise PKIError(f"not a PEM certificate revocation list: {exc}") from exc
        return cls(frozenset(revoked.serial_number for revoked in crl))

    def is_revoked(self, serial: int) -> bool:
        return serial in self.serials

    def __repr__(self) -> str:
        return f"RevocationList({len(self.serials)} serials)"


class CrlWatcher:
    """Notices when a CRL file changes; call :meth:`refresh` periodically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None

    def refresh(self) -> frozenset[int] | None:
        """The revoked serials if the file changed since the last call, else ``None``.

        The first call reports the file as it is. A missing or unreadable file reports
        nothing and is tried again on the next call.
        """
        try:
            with self.path.open("rb") as file:
                # Stat the open file, not the path: the CA replaces the file by renaming,
                # and the stamp must describe the bytes actually read.
                stat = os.fstat(file.fileno())
                stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if stamp == self._stamp:
                    return None
                pem = file.read()
        except OSError:
            return None
        try:
            revocations = RevocationList.from_pem(pem)
        except PKIError:
            return None
        self._stamp = stamp
        return revocations.serials
