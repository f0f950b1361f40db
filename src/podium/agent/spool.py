"""The agent's spool: a folder per transaction, kept until the server has the result.

``<root>/<transaction_id>/`` holds::

    metadata.json   the request and its state; replaced atomically on every change. The
                    params are what the action lets be stored: never a task's input
    pid stdout stderr exitcode deadline install/
                    a task's process, outcome, time limit and files (written by the
                    runner, see :mod:`podium.agent.taskrun`); its ``stdin`` is removed
                    as soon as the task has it open
    result.json     the final result, written before metadata says "success"/"failure"
    acknowledged    present once the server has confirmed it received the result

States: ``accepted`` → ``running`` → ``success`` | ``failure``. A transaction folder
is claimed with ``mkdir``, which fails if it exists, so a transaction id is taken
exactly once: a request re-sent with the same id is never run twice.

Acknowledgement is a marker file rather than a field of metadata.json so that listing
what still has to be sent costs one ``stat`` per acknowledged transaction, not a parse.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from podium.errors import Conflict, NotFound, PodiumError, ValidationError
from podium.files import write_atomic
from podium.protocol.names import validate_transaction_id

FINISHED: Final = frozenset({"success", "failure"})
UNFINISHED: Final = frozenset({"accepted", "running"})

_METADATA: Final = "metadata.json"
_RESULT: Final = "result.json"
_ACKNOWLEDGED: Final = "acknowledged"


@dataclass(frozen=True)
class TransactionRecord:
    """One transaction as the spool knows it; ``results`` is set once it has finished."""

    transaction_id: str
    module: str
    action: str
    params: dict[str, Any]
    requester: str
    status: str  # accepted | running | success | failure
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    pid: int | None
    acknowledged: bool
    results: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, atomically and durably (the spool's default)."""
    write_atomic(path, data, mode=0o600, durable=True)


class Spool:
    """Transactions on disk, safe across agent restarts. Blocking I/O (small files, but
    fsync'd): the agent calls it from worker threads. Disk errors raise OSError.

    ``write`` replaces a file of the spool with new bytes (tests give one that fails as
    a full disk does).
    """

    def __init__(
        self,
        root: Path,
        *,
        ttl: timedelta = timedelta(days=14),
        write: Callable[[Path, bytes], None] = write_durably,
    ) -> None:
        self.root = Path(root)
        self.ttl = ttl
        self._write = write
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, txid: str) -> Path:
        """The transaction's folder (validated: transaction ids come from the network)."""
        return self.root / validate_transaction_id(txid)

    def create(
        self,
        txid: str,
        *,
        module: str,
        action: str,
        params: dict[str, Any],
        requester: str,
        now: datetime,
    ) -> TransactionRecord:
        """Record a new request; :class:`Conflict` if the id was ever used."""
        final = self.path(txid)
        if final.exists():
            raise _taken(txid)
        meta = {
            "transaction_id": txid,
            "module": module,
            "action": action,
            "params": params,
            "requester": requester,
            "status": "accepted",
            "created_at": now.isoformat(),
            "started_at": None,
            "finished_at": None,
            "pid": None,
        }
        try:
            # mkdir claims the id atomically even if two requests race. A crash before
            # the metadata is written leaves a folder that reads as a failed transaction,
            # so the request is still never run twice.
            final.mkdir(mode=0o700)
        except FileExistsError as exc:
            raise _taken(txid) from exc
        try:
            self._write_json(final / _METADATA, meta)
        except BaseException:
            # Not recorded (a full disk): the request is refused, so the id stays free.
            shutil.rmtree(final, ignore_errors=True)
            raise
        return _record(meta, acknowledged=False, results=None)

    def get(self, txid: str) -> TransactionRecord | None:
        """The transaction, with its results once finished; None if it was never created."""
        folder = self.path(txid)
        if not folder.is_dir():
            return None
        meta = _read_metadata(folder)
        results = _read_results(folder) if meta["status"] in FINISHED else None
        return _record(meta, acknowledged=(folder / _ACKNOWLEDGED).exists(), results=results)

    def set_running(self, txid: str, *, pid: int, now: datetime) -> TransactionRecord:
        """An accepted transaction has started, as process ``pid``."""
        folder, meta = self._load(txid)
        if meta["status"] != "accepted":
            raise Conflict(
                f"transaction {txid} is {meta['status']}; only an accepted one can start",
                details={"transaction_id": txid, "status": meta["status"]},
            )
        meta.update(status="running", pid=pid, started_at=now.isoformat())
        self._write_json(folder / _METADATA, meta)
        return _record(meta, acknowledged=False, results=None)

    def finish(
        self,
        txid: str,
        *,
        status: Literal["success", "failure"],
        results: dict[str, Any],
        now: datetime,
    ) -> TransactionRecord:
        """Record the outcome: result.json first, then the state in metadata.json."""
        if status not in FINISHED:
            raise ValidationError(f"a transaction finishes with success or failure, not {status!r}")
        folder, meta = self._load(txid)
        if meta["status"] in FINISHED:
            raise Conflict(
                f"transaction {txid} has already finished ({meta['status']})",
                details={"transaction_id": txid, "status": meta["status"]},
            )
        self._write_json(folder / _RESULT, results)
        meta.update(status=status, finished_at=now.isoformat())
        self._write_json(folder / _METADATA, meta)
        return _record(meta, acknowledged=False, results=results)

    def acknowledge(self, txid: str, now: datetime) -> None:
        """The server has the result; it is no longer re-sent. Repeating it is harmless."""
        folder, meta = self._load(txid)
        if meta["status"] not in FINISHED:
            raise Conflict(
                f"transaction {txid} is {meta['status']}: there is no result to acknowledge",
                details={"transaction_id": txid, "status": meta["status"]},
            )
        marker = folder / _ACKNOWLEDGED
        if not marker.exists():
            marker.write_text(now.isoformat() + "\n", encoding="utf-8")

    def unacknowledged(self) -> list[TransactionRecord]:
        """Finished transactions whose result the server has not confirmed, oldest first."""
        records = []
        for folder in self._pending():
            meta = _read_metadata(folder)
            if meta["status"] in FINISHED:
                records.append(_record(meta, acknowledged=False, results=_read_results(folder)))
        return sorted(records, key=lambda r: (r.finished_at or r.created_at, r.transaction_id))

    def running(self) -> list[TransactionRecord]:
        """Unfinished transactions (accepted or running), oldest first: what a restarted
        agent must follow (``pid`` set) or close (never started, ``pid`` None)."""
        records = []
        for folder in self._pending():
            meta = _read_metadata(folder)
            if meta["status"] in UNFINISHED:
                records.append(_record(meta, acknowledged=False, results=None))
        return sorted(records, key=lambda r: (r.created_at, r.transaction_id))

    def purge(self, now: datetime) -> int:
        """Remove acknowledged transactions unchanged for ``ttl``."""
        cutoff = (now - self.ttl).timestamp()
        removed = 0
        for entry in _scandir(self.root):
            path = Path(entry.path)
            if not _is_txid(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            if _last_change(path) >= cutoff:
                continue
            # Only what the server has acknowledged: an id whose result was never
            # confirmed may be re-sent, and must then be answered, not run again.
            if not (path / _ACKNOWLEDGED).exists():
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        return removed

    # -- helpers ----------------------------------------------------------------------

    def _write_json(self, path: Path, data: Any) -> None:
        self._write(path, orjson.dumps(data))

    def _load(self, txid: str) -> tuple[Path, dict[str, Any]]:
        folder = self.path(txid)
        if not folder.is_dir():
            raise NotFound(f"no transaction {txid} in the spool", details={"transaction_id": txid})
        return folder, _read_metadata(folder)

    def _pending(self) -> list[Path]:
        """Transaction folders without an acknowledgement marker."""
        return [
            Path(e.path)
            for e in _scandir(self.root)
            if _is_txid(e.name)
            and e.is_dir(follow_symlinks=False)
            and not os.path.exists(os.path.join(e.path, _ACKNOWLEDGED))
        ]


def _taken(txid: str) -> Conflict:
    return Conflict(
        f"transaction {txid} already exists in the spool; a transaction id is used once",
        details={"transaction_id": txid},
    )


def _is_txid(name: str) -> bool:
    try:
        validate_transaction_id(name)
    except PodiumError:
        return False
    return True


def _scandir(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except FileNotFoundError:
        return []


def _last_change(folder: Path) -> float:
    """Creating or replacing a file updates its folder's mtime; metadata.json is a check."""
    times = []
    for path in (folder, folder / _METADATA):
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times, default=0.0)


def _read_metadata(folder: Path) -> dict[str, Any]:
    """metadata.json; an unreadable one reads as a failed transaction, never as a new one."""
    try:
        meta = json.loads((folder / _METADATA).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("status") not in FINISHED | UNFINISHED:
            raise ValueError("not a transaction record")
        datetime.fromisoformat(meta["created_at"])
    except (OSError, ValueError, KeyError, TypeError):
        when = datetime.fromtimestamp(_last_change(folder)).astimezone()
        return {
            "transaction_id": folder.name,
            "module": "",
            "action": "",
            "params": {},
            "requester": "",
            "status": "failure",
            "created_at": when.isoformat(),
            "started_at": None,
            "finished_at": when.isoformat(),
            "pid": None,
        }
    return meta


def _read_results(folder: Path) -> dict[str, Any]:
    try:
        results = json.loads((folder / _RESULT).read_text(encoding="utf-8"))
        problem = "result.json does not hold an object"
        if isinstance(results, dict):
            return results
    except (OSError, ValueError) as exc:
        problem = f"result.json is unreadable: {exc}"
    return {
        "_error": {
            "kind": "podium.agent/spool-damaged",
            "msg": f"the agent lost the task's result: {problem}",
            "details": {},
        }
    }


def _record(
    meta: dict[str, Any], *, acknowledged: bool, results: dict[str, Any] | None
) -> TransactionRecord:
    def when(key: str) -> datetime | None:
        value = meta.get(key)
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    created = when("created_at")
    assert created is not None
    pid = meta.get("pid")
    params = meta.get("params")
    return TransactionRecord(
        transaction_id=str(meta["transaction_id"]),
        module=str(meta.get("module", "")),
        action=str(meta.get("action", "")),
        params=params if isinstance(params, dict) else {},
        requester=str(meta.get("requester", "")),
        status=str(meta["status"]),
        created_at=created,
        started_at=when("started_at"),
        finished_at=when("finished_at"),
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        acknowledged=acknowledged,
        results=results,
    )
