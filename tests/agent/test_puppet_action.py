"""puppet/run and its companions, with the real ``puppet`` in folders of the test's own."""

from __future__ import annotations

import asyncio
import hashlib
import io
import shutil
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from podium.agent.actions import StopSignal
from podium.agent.actions.puppet import (
    PuppetDisable,
    PuppetEnable,
    PuppetResource,
    PuppetRun,
    PuppetStatus,
    PuppetStop,
    parse_resource,
    parse_run,
)
from podium.agent.config import AgentConfig
from podium.agent.filecache import FileCache
from podium.agent.puppet import runner
from podium.agent.spool import Spool, TransactionRecord
from podium.errors import ProtocolError, ValidationError
from podium.protocol import messages as msg
from waiting import DEADLINE, until

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CONF = "modulepath = modules\nmanifest = manifests\n"
needs_puppet = pytest.mark.skipif(shutil.which("puppet") is None, reason="puppet is not installed")


def pack(files: dict[str, str], *, extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in {"production/environment.conf": CONF, **files}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra:
            archive.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return buffer.getvalue()


def code(data: bytes) -> dict[str, Any]:
    sha256 = hashlib.sha256(data).hexdigest()
    return {
        "filename": "production.tar.gz",
        "uri": {"path": f"/packs/{sha256}", "params": {}},
        "sha256": sha256,
        "size_bytes": len(data),
    }


@dataclass
class State:
    config: AgentConfig
    spool: Spool
    cache: FileCache
    packs: dict[str, bytes] = field(default_factory=dict)
    signals: dict[str, StopSignal] = field(default_factory=dict)

    def accepting(self, txid: str) -> bool:
        return False

    async def recorded(self, txid: str) -> None:
        return None

    def stop_signal(self, txid: str) -> StopSignal | None:
        return self.signals.get(txid)

    def report(self, record: TransactionRecord, message: msg.Message) -> bool:
        return True


@pytest.fixture
def agent(tmp_path: Path) -> State:
    packs: dict[str, bytes] = {}

    async def fetch(path: str) -> bytes:
        return packs[path.rsplit("/", 1)[-1]]

    return State(
        config=AgentConfig(
            certname="node1.example",
            server_url="https://x",
            brokers=(),
            vardir=tmp_path / "agent",
            puppet_root=tmp_path / "puppet",
        ),
        spool=Spool(tmp_path / "spool"),
        cache=FileCache(tmp_path / "cache", fetch),
        packs=packs,
    )


def request(agent: State, manifest: str, **overrides: Any) -> dict[str, Any]:
    files = {"production/manifests/site.pp": manifest, **overrides.pop("files", {})}
    data = pack(files)
    agent.packs[hashlib.sha256(data).hexdigest()] = data
    return {"mode": "apply", "environment": "production", "code": code(data), **overrides}


async def run(
    agent: State, body: dict[str, Any], txid: str = "tx-1", action: PuppetRun | None = None
) -> tuple[bool, dict[str, Any]]:
    action = action or PuppetRun()
    record = agent.spool.create(
        txid, module="puppet", action="run", params=body, requester="pcp://s/server", now=T0
    )
    return await action.run(agent, record, action.parse(body))


# -- requests -------------------------------------------------------------------------


def test_requests_are_checked():
    body = {"environment": "production", "code": code(b"x"), "noop": None, "debug": True}
    parsed = parse_run(body)
    assert (parsed.mode, parsed.noop, parsed.flags["debug"]) == ("apply", None, True)
    assert parsed.classification == {"classes": {}, "parameters": {}}
    assert parse_run({"mode": "agent", "environment": "dev"}).code is None
    for bad, why in [
        ({**body, "server": "x"}, "unknown param"),
        ({**body, "environment": "Prod"}, "'environment' must be"),
        ({**body, "noop": "yes"}, "'noop' must be"),
        ({**body, "timeout": 0}, "'timeout' must be"),
        ({"environment": "production"}, "apply mode needs 'code'"),
        ({"mode": "agent", "environment": "p", "code": code(b"x")}, "'code' is for apply"),
        ({**body, "classification": {"classes": {"Bad Name": {}}}}, "not a class name"),
    ]:
        with pytest.raises(ProtocolError, match=why):
            parse_run(bad)
    assert parse_resource({"type": "file", "title": "/etc/hosts"}) == ("file", "/etc/hosts")
    for bad in ({"type": "File"}, {"type": "file", "title": "-x"}, {"type": "file", "title": ""}):
        with pytest.raises(ProtocolError):
            parse_resource(bad)


def test_unpacking_refuses_unsafe_members(tmp_path: Path) -> None:
    link = tarfile.TarInfo("production/manifests/link.pp")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    dotdot = tarfile.TarInfo("production/../../evil")
    dotdot.size = 1
    absolute = tarfile.TarInfo("/tmp/evil")
    absolute.size = 1
    for member, why in ((link, "not a plain file"), (dotdot, "unsafe"), (absolute, "unsafe")):
        tarball = tmp_path / "p.tar.gz"
        tarball.write_bytes(pack({}, extra=[member]))
        with pytest.raises(ValidationError, match=why):
            runner.unpack(tarball, tmp_path / "envs", "a" * 64)
        assert not (tmp_path / "envs" / ("a" * 64)).exists()
        assert list((tmp_path / "envs").iterdir()) == []
    tarball.write_bytes(pack({"production/manifests/site.pp": "notice(1)"}))
    root = runner.unpack(tarball, tmp_path / "envs", "b" * 64)
    assert (root / "production/manifests/site.pp").read_text() == "notice(1)"


async def test_a_missing_puppet_command_is_named(agent: State) -> None:
    agent.config = AgentConfig(
        certname="n", server_url="", brokers=(), puppet_bin="no-such-puppet",
        puppet_root=agent.config.puppet_root,
    )  # fmt: skip
    ok, results = await run(agent, request(agent, ""))
    assert not ok
    assert results["_error"]["kind"] == "podium.puppet/not-installed"
    assert "puppet_bin" in results["_error"]["msg"]


# -- real runs ------------------------------------------------------------------------


@needs_puppet
async def test_a_run_changes_then_finds_nothing_to_change(agent: State, tmp_path: Path) -> None:
    target = tmp_path / "managed"
    manifest = (
        f"file {{ '{target}': ensure => directory }}\n"
        f"file {{ '{target}/motd': content => \"hello\\n\" }}\n"
        f"exec {{ 'stamp': command => '/bin/touch {target}/stamp', creates => '{target}/stamp' }}\n"
    )
    body = request(agent, manifest)
    ok, results = await run(agent, body)
    assert ok, results.get("_error")
    assert (results["status"], results["exit_code"]) == ("changed", 2)
    assert results["metrics"]["changed"] == 3
    assert (target / "motd").read_text() == "hello\n" and (target / "stamp").exists()
    assert results["report"]["certname"] == "node1.example"
    ok, again = await run(agent, body, "tx-2")
    assert ok and (again["status"], again["exit_code"], again["events"]) == ("unchanged", 0, [])
    status = await PuppetStatus().answer(agent, {})
    assert status["enabled"] and not status["running"]
    assert status["last_run"]["status"] == "unchanged"
    assert status["last_run"]["resources"]["total"] >= 3


@needs_puppet
async def test_a_noop_run_reports_pending_changes_and_changes_nothing(
    agent: State, tmp_path: Path
) -> None:
    target = tmp_path / "motd"
    ok, results = await run(
        agent, request(agent, f"file {{ '{target}': content => 'x' }}", noop=True)
    )
    assert ok
    assert (results["noop"], results["noop_pending"], results["metrics"]["noop"]) == (True, True, 1)
    assert not target.exists()


@needs_puppet
async def test_a_failing_exec_fails_the_run_with_its_message(agent: State) -> None:
    manifest = "exec { 'boom': command => 'false', path => ['/bin', '/usr/bin'] }\n"
    ok, results = await run(agent, request(agent, manifest))
    assert not ok
    assert results["status"] == "failed"
    assert results["_error"]["kind"] == "podium.puppet/run-failed"
    assert results["_error"]["msg"] == (
        "1 resource failed: Exec[boom]: 'false' returned 1 instead of one of [0]"
    )


@needs_puppet
async def test_classification_reaches_the_catalog_and_node_blocks_still_apply(
    agent: State, tmp_path: Path
) -> None:
    body = request(
        agent,
        f"node default {{ file {{ '{tmp_path}/node': content => $greeting }} }}\n",
        files={
            "production/modules/motd/manifests/init.pp": (
                f"class motd($text) {{ file {{ '{tmp_path}/motd': content => $text }} }}\n"
            )
        },
        classification={"classes": {"motd": {"text": "from the classifier"}},
                        "parameters": {"greeting": "hi"}},
    )  # fmt: skip
    ok, results = await run(agent, body)
    assert ok, results.get("_error")
    assert (tmp_path / "motd").read_text() == "from the classifier"
    assert (tmp_path / "node").read_text() == "hi"


@needs_puppet
async def test_a_disabled_node_refuses_to_run_until_enabled(agent: State, tmp_path: Path) -> None:
    status = await PuppetDisable().answer(agent, {"message": "maintenance window"})
    assert (status["enabled"], status["disabled_message"]) == (False, "maintenance window")
    lock = agent.config.puppet_root / "var/state/agent_disabled.lock"  # type: ignore[operator]
    assert lock.read_text() == '{"disabled_message": "maintenance window"}'
    body = request(agent, f"file {{ '{tmp_path}/x': content => 'x' }}")
    ok, results = await run(agent, body)
    assert (ok, results) == (
        False,
        {
            "_error": {
                "kind": "podium.puppet/agent_disabled",
                "msg": "Puppet is disabled on node1.example: maintenance window; "
                "enable it with podium puppet enable",
                "details": {"disabled_message": "maintenance window"},
            }
        },
    )
    assert not (tmp_path / "x").exists()
    assert (await PuppetEnable().answer(agent, {}))["enabled"] is True
    ok, results = await run(agent, body, "tx-2")
    assert ok and (tmp_path / "x").exists()


@needs_puppet
async def test_puppet_resource_reads_a_file(agent: State, tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    target.write_text("x")
    answer = await PuppetResource().answer(agent, {"type": "file", "title": str(target)})
    (resource,) = answer["resources"]
    assert (resource["type"], resource["title"]) == ("file", str(target))
    assert resource["parameters"]["ensure"] == "file"


@needs_puppet
async def test_a_second_run_waits_for_the_first_and_stop_ends_a_long_run(
    agent: State, tmp_path: Path
) -> None:
    action = PuppetRun(kill_grace=1.0)
    long = request(agent, "exec { 'wait': command => '/bin/sleep 60' }\n")
    agent.signals["tx-long"] = StopSignal("puppet", "run")
    first = asyncio.ensure_future(run(agent, long, "tx-long", action))
    lock = agent.config.puppet_root / "var/state/agent_catalog_run.lock"  # type: ignore[operator]
    await until(lock.exists, what="the first run to start")
    second = asyncio.ensure_future(
        run(
            agent, request(agent, f"file {{ '{tmp_path}/second': content => 'x' }}"), "tx-2", action
        )
    )
    assert (await PuppetStatus(action).answer(agent, {}))["running"] is True
    assert not second.done() and not (tmp_path / "second").exists()
    stopped = await PuppetStop().answer(agent, {"transaction_id": "tx-long", "reason": "enough"})
    assert stopped == {"stopped": True}
    ok, results = await asyncio.wait_for(first, DEADLINE)
    assert not ok and results["_error"]["kind"] == "podium.tasks/task-stopped"
    assert "enough" in results["_error"]["msg"]
    ok, results = await asyncio.wait_for(second, DEADLINE)
    assert ok and (tmp_path / "second").exists()


@needs_puppet
async def test_an_agent_run_without_a_server_fails_clearly(agent: State) -> None:
    action = PuppetRun(agent_options=("--server=127.0.0.1", "--serverport=1", "--waitforcert=0"))
    ok, results = await run(agent, {"mode": "agent", "environment": "production"}, action=action)
    assert not ok
    assert results["_error"]["kind"] == "podium.puppet/run-failed"
    assert "127.0.0.1:1" in results["_error"]["msg"]
