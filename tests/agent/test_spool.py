"""The agent's spool: one folder per transaction, kept until the server acknowledges it."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from podium.agent import spool as spool_module
from podium.agent.spool import Spool
from podium.errors import Conflict, NotFound, ProtocolError, ValidationError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _create(spool: Spool, txid: str, at: datetime = T0) -> None:
    spool.create(
        txid,
        module="task",
        action="run",
        params={"task": "podium::echo", "input": {"message": "hi"}},
        requester="pcp://server.example/server",
        now=at,
    )


def _finished(spool: Spool, txid: str, at: datetime = T0, status: Any = "success") -> None:
    _create(spool, txid, at)
    spool.set_running(txid, pid=4242, now=at)
    spool.finish(txid, status=status, results={"_output": txid}, now=at + timedelta(seconds=1))


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def test_a_new_transaction_is_accepted_and_recorded(spool: Spool) -> None:
    _create(spool, "tx-1")
    record = spool.get("tx-1")
    assert record is not None
    assert record.transaction_id == "tx-1"
    assert (record.module, record.action) == ("task", "run")
    assert record.params == {"task": "podium::echo", "input": {"message": "hi"}}
    assert record.requester == "pcp://server.example/server"
    assert record.status == "accepted"
    assert record.created_at == T0
    assert (record.started_at, record.finished_at, record.pid, record.results) == (
        None,
        None,
        None,
        None,
    )
    assert not record.acknowledged
    assert json.loads((spool.path("tx-1") / "metadata.json").read_text())["status"] == "accepted"
    assert sorted(p.name for p in spool.root.iterdir()) == ["tx-1"]


def test_an_unknown_transaction_is_none(spool: Spool) -> None:
    assert spool.get("never-seen") is None


def test_a_transaction_id_is_used_only_once(spool: Spool) -> None:
    _create(spool, "tx-1")
    _finished(spool, "tx-2")
    for txid in ("tx-1", "tx-2"):
        with pytest.raises(Conflict, match="already exists"):
            _create(spool, txid)
    assert spool.get("tx-2").status == "success"  # type: ignore[union-attr]


def test_racing_creates_of_one_id_let_exactly_one_win(spool: Spool) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            _create(spool, "raced")
            outcomes.append("created")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["created"]
    assert [p.name for p in spool.root.iterdir()] == ["raced"]


@pytest.mark.parametrize("txid", ["../etc", "a/b", "", ".hidden", "x" * 65, "tx 1", None])
def test_transaction_ids_are_validated_before_they_become_paths(spool: Spool, txid: Any) -> None:
    with pytest.raises(ProtocolError):
        spool.path(txid)
    with pytest.raises(ProtocolError):
        spool.get(txid)
    with pytest.raises(ProtocolError):
        _create(spool, txid)
    assert list(spool.root.iterdir()) == []


def test_a_transaction_goes_from_accepted_to_running_to_finished(spool: Spool) -> None:
    _create(spool, "tx-1")
    running = spool.set_running("tx-1", pid=123, now=T0 + timedelta(seconds=1))
    assert (running.status, running.pid, running.started_at) == (
        "running",
        123,
        T0 + timedelta(seconds=1),
    )
    done = spool.finish(
        "tx-1", status="failure", results={"_error": {"msg": "x"}}, now=T0 + timedelta(seconds=2)
    )
    assert done.status == "failure"
    assert done.results == {"_error": {"msg": "x"}}
    assert json.loads((spool.path("tx-1") / "result.json").read_text()) == {"_error": {"msg": "x"}}
    again = spool.get("tx-1")
    assert again == done
    assert again is not None and again.finished_at == T0 + timedelta(seconds=2)


def test_a_transaction_starts_once_and_finishes_once(spool: Spool) -> None:
    _create(spool, "tx-1")
    spool.set_running("tx-1", pid=1, now=T0)
    with pytest.raises(Conflict, match="only an accepted one can start"):
        spool.set_running("tx-1", pid=2, now=T0)
    spool.finish("tx-1", status="success", results={}, now=T0)
    with pytest.raises(Conflict, match="already finished"):
        spool.finish("tx-1", status="failure", results={}, now=T0)


def test_a_task_that_never_started_can_be_closed(spool: Spool) -> None:
    _create(spool, "tx-1")
    record = spool.finish("tx-1", status="failure", results={"_error": {}}, now=T0)
    assert record.status == "failure"


def test_finishing_needs_a_final_status(spool: Spool) -> None:
    _create(spool, "tx-1")
    with pytest.raises(ValidationError):
        spool.finish("tx-1", status="running", results={}, now=T0)  # type: ignore[arg-type]


def test_operations_on_unknown_transactions_are_not_found(spool: Spool) -> None:
    with pytest.raises(NotFound):
        spool.set_running("nope", pid=1, now=T0)
    with pytest.raises(NotFound):
        spool.finish("nope", status="success", results={}, now=T0)
    with pytest.raises(NotFound):
        spool.acknowledge("nope", T0)


def test_unacknowledged_results_are_listed_oldest_first_until_acknowledged(spool: Spool) -> None:
    _finished(spool, "late", T0 + timedelta(minutes=5))
    _finished(spool, "early", T0, status="failure")
    _create(spool, "still-accepted")
    _create(spool, "still-running")
    spool.set_running("still-running", pid=1, now=T0)
    pending = spool.unacknowledged()
    assert [r.transaction_id for r in pending] == ["early", "late"]
    assert pending[0].results == {"_output": "early"}
    spool.acknowledge("early", T0)
    spool.acknowledge("early", T0)  # a repeated acknowledgement is harmless
    assert [r.transaction_id for r in spool.unacknowledged()] == ["late"]
    record = spool.get("early")
    assert record is not None and record.acknowledged


def test_only_a_finished_transaction_can_be_acknowledged(spool: Spool) -> None:
    _create(spool, "tx-1")
    with pytest.raises(Conflict, match="no result to acknowledge"):
        spool.acknowledge("tx-1", T0)


def test_listing_pending_results_does_not_read_acknowledged_transactions(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(300):
        _finished(spool, f"done-{i}")
        spool.acknowledge(f"done-{i}", T0)
    _finished(spool, "pending")
    reads: list[Path] = []
    real_read = spool_module._read_metadata

    def counting(folder: Path) -> dict[str, Any]:
        reads.append(folder)
        return real_read(folder)

    monkeypatch.setattr(spool_module, "_read_metadata", counting)
    assert [r.transaction_id for r in spool.unacknowledged()] == ["pending"]
    assert [p.name for p in reads] == ["pending"]


def test_running_lists_what_a_restarted_agent_must_follow_or_close(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool")
    _create(first, "never-started", T0)
    _create(first, "started", T0 + timedelta(seconds=1))
    first.set_running("started", pid=999, now=T0)
    _finished(first, "finished")
    # A new Spool on the same folder is what the agent sees after a restart.
    after_restart = Spool(tmp_path / "spool")
    running = after_restart.running()
    assert [(r.transaction_id, r.status, r.pid) for r in running] == [
        ("never-started", "accepted", None),
        ("started", "running", 999),
    ]
    assert [r.transaction_id for r in after_restart.unacknowledged()] == ["finished"]


def test_purge_removes_old_acknowledged_transactions_only(spool: Spool) -> None:
    _finished(spool, "acked")
    spool.acknowledge("acked", T0)
    _finished(spool, "unacked")
    _create(spool, "accepted")
    _create(spool, "running")
    spool.set_running("running", pid=1, now=T0)
    (spool.root / "not a transaction").mkdir()
    now = datetime.now(UTC)
    assert spool.purge(now) == 0  # everything changed just now
    # Only the acknowledged one: an unacknowledged result may still be asked for.
    assert spool.purge(now + timedelta(days=15)) == 1
    assert sorted(p.name for p in spool.root.iterdir()) == [
        "accepted",
        "not a transaction",
        "running",
        "unacked",
    ]


def test_purge_keeps_recent_transactions_with_a_short_ttl(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", ttl=timedelta(hours=1))
    _finished(spool, "tx-1")
    spool.acknowledge("tx-1", T0)
    assert spool.purge(datetime.now(UTC) + timedelta(minutes=30)) == 0
    assert spool.purge(datetime.now(UTC) + timedelta(minutes=90)) == 1


def test_a_damaged_record_reads_as_a_failure_never_as_new(spool: Spool) -> None:
    _create(spool, "tx-1")
    (spool.path("tx-1") / "metadata.json").write_text("{truncated")
    record = spool.get("tx-1")
    assert record is not None
    assert record.status == "failure"
    assert record.results is not None and "_error" in record.results
    with pytest.raises(Conflict):
        _create(spool, "tx-1")
    assert [r.transaction_id for r in spool.unacknowledged()] == ["tx-1"]


def test_metadata_is_replaced_atomically(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    _create(spool, "tx-1")

    def crash(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(spool_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        spool.set_running("tx-1", pid=1, now=T0)
    monkeypatch.undo()
    record = spool.get("tx-1")
    assert record is not None and record.status == "accepted"
    assert sorted(p.name for p in spool.path("tx-1").iterdir()) == ["metadata.json"]


def test_a_request_that_cannot_be_recorded_leaves_its_id_free(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _create(spool, "tx-1")
    monkeypatch.undo()
    assert spool.get("tx-1") is None
    assert not spool.path("tx-1").exists()
    _create(spool, "tx-1")  # the request was refused, so it may come again
    assert spool.get("tx-1") is not None
