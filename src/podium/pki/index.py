"""The CA's index of issued certificates: an append-only file of JSON lines.

A line records that a certificate was signed (serial, certname, expiry, fingerprint),
that a serial was revoked, or that a certname was cleaned: the CA forgot it, so a new
request for it is treated like a new node's. Appending keeps signing cheap however
many certificates exist; an open index reads only what other processes appended since
it last looked.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from podium.errors import PKIError
from podium.files import append_line

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexEntry:
    """One issued certificate, as the index knows it."""

    serial: int
    certname: str
    not_after: datetime
    fingerprint: str


class CertIndex:
    """In-memory view of an index file; call :meth:`sync` under the CA lock before use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._inode: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._offset = 0
        self.by_serial: dict[int, IndexEntry] = {}
        self.current: dict[str, int] = {}  # certname -> serial of its latest certificate
        # (until the certname is cleaned)
        self.revoked: dict[int, datetime] = {}  # serial -> revocation date
        self.max_serial = 0

    def sync(self) -> None:
        """Read the lines appended since the last call (all of them if the file changed)."""
        try:
            with self.path.open("rb") as file:
                stat = os.fstat(file.fileno())
                if stat.st_ino != self._inode or stat.st_size < self._offset:
                    self._reset()
                    self._inode = stat.st_ino
                if stat.st_size == self._offset:
                    return
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            self._reset()
            self._inode = None
            return
        # A line is complete only once its newline is written.
        end = data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            self._apply_line(raw)
        self._offset += end

    def state(self, serial: int) -> str:
        return "revoked" if serial in self.revoked else "signed"

    def append_signed(self, entry: IndexEntry) -> None:
        record = {
            "serial": entry.serial,
            "certname": entry.certname,
            "state": "signed",
            "not_after": entry.not_after.isoformat(),
            "fingerprint": entry.fingerprint,
        }
        self._append(record)

    def append_revoked(self, serial: int, certname: str, when: datetime) -> None:
        record = {
            "serial": serial,
            "certname": certname,
            "state": "revoked",
            "at": when.isoformat(),
        }
        self._append(record)

    def append_cleaned(self, serial: int, certname: str, when: datetime) -> None:
        record = {
            "serial": serial,
            "certname": certname,
            "state": "cleaned",
            "at": when.isoformat(),
        }
        self._append(record)

    def _append(self, record: dict[str, object]) -> None:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        append_line(self.path, line)
        # Callers hold the lock and synced first, so this line follows what we have read.
        self._apply_record(record)
        self._offset += len(line)
        if self._inode is None:
            self._inode = os.stat(self.path).st_ino

    def _apply_line(self, raw: bytes) -> None:
        try:
            record = json.loads(raw)
        except ValueError:
            # A torn line can only come from a writer that died mid-append; the rest of
            # the index is still good.
            logger.warning("skipping an unreadable line in %s: %r", self.path, raw[:200])
            return
        try:
            self._apply_record(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise PKIError(f"the CA index {self.path} has an invalid record: {raw!r}") from exc

    def _apply_record(self, record: dict[str, object]) -> None:
        serial = int(str(record["serial"]))
        certname = str(record["certname"])
        if record["state"] == "signed":
            self.by_serial[serial] = IndexEntry(
                serial=serial,
                certname=certname,
                not_after=datetime.fromisoformat(str(record["not_after"])),
                fingerprint=str(record["fingerprint"]),
            )
            self.current[certname] = serial
            self.max_serial = max(self.max_serial, serial)
        elif record["state"] == "revoked":
            self.revoked[serial] = datetime.fromisoformat(str(record["at"]))
        elif record["state"] == "cleaned":
            if self.current.get(certname) == serial:
                del self.current[certname]
        else:
            raise ValueError(f"unknown state {record['state']!r}")
