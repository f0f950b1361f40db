"""puppet/run and its companions, with the real ``puppet`` in folders of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.agent import taskrun
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
    resources_of,
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
    reported: list[msg.Message] = field(default_factory=list)

    def accepting(self, txid: str) -> bool:
        return False

    async def recorded(self, txid: str) -> None:
        return None

    def stop_signal(self, txid: str) -> StopSignal | None:
        return self.signals.get(txid)

    def report(self, record: TransactionRecord, message: msg.Message) -> bool:
        self.reported.append(message)
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


def record(agent: State, body: dict[str, Any], txid: str) -> TransactionRecord:
    return agent.spool.create(
        txid,
        module="puppet",
        action="run",
        params=PuppetRun().stored(body),
        requester="pcp://s/server",
        now=T0,
    )


async def run(
    agent: State, body: dict[str, Any], txid: str = "tx-1", action: PuppetRun | None = None
) -> tuple[bool, dict[str, Any]]:
    action = action or PuppetRun()
    return await action.run(agent, record(agent, body, txid), action.parse(body))


def state_dir(agent: State) -> Path:
    assert agent.config.puppet_root is not None
    return agent.config.puppet_root / "var" / "state"


def fake_puppet_run(tmp_path: Path) -> subprocess.Popen[bytes]:
    """A process Puppet would take for one of its runs (its name is puppet), holding
    Puppet's run lock as a ``puppet agent`` daemon run does."""
    program = tmp_path / "bin" / "puppet"
    program.parent.mkdir(exist_ok=True)
    shutil.copy("/bin/sleep", program)
    process = subprocess.Popen([str(program), "600"])
    state_dir_of = tmp_path / "puppet" / "var" / "state"
    state_dir_of.mkdir(parents=True, exist_ok=True)
    (state_dir_of / "agent_catalog_run.lock").write_text(str(process.pid))
    return process


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
    (unpacked,) = (tmp_path / "cache" / "environments").iterdir()
    first_unpack = unpacked.stat().st_ino
    old = tmp_path / "cache" / "environments" / ("0" * 64)
    old.mkdir()
    os.utime(old, (0, 0))  # an environment no run used for a long time
    ok, again = await run(agent, body, "tx-2")
    assert ok and (again["status"], again["exit_code"], again["events"]) == ("unchanged", 0, [])
    assert [p.name for p in (tmp_path / "cache" / "environments").iterdir()] == [unpacked.name]
    assert unpacked.stat().st_ino == first_unpack  # unpacked once per SHA-256
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
                "enable it with: podium puppet enable --nodes node1.example",
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


@needs_puppet
async def test_a_run_streams_its_output_and_keeps_no_classification_on_disk(
    agent: State, tmp_path: Path
) -> None:
    body = request(
        agent,
        f"file {{ '{tmp_path}/secret': content => $password }}\n",
        classification={"classes": {}, "parameters": {"password": "s3cret"}},
    )
    assert "classification" not in PuppetRun().stored(body)
    ok, results = await run(agent, body, "tx-s", PuppetRun(output_interval=0.01))
    assert ok, results.get("_error")
    assert (tmp_path / "secret").read_text() == "s3cret"
    streamed = "".join(
        m.data for m in agent.reported if isinstance(m, msg.TaskOutput) and m.stream == "stdout"
    )
    assert "Notice: Applied catalog" in streamed
    txdir = agent.spool.path("tx-s")
    assert not (txdir / "enc.json").exists() and not (txdir / "enc").exists()
    assert "s3cret" not in "".join(p.read_text(errors="replace") for p in txdir.iterdir())


@needs_puppet
async def test_a_run_past_its_timeout_is_stopped(agent: State, tmp_path: Path) -> None:
    body = request(agent, "exec { 'wait': command => '/bin/sleep 60' }\n", timeout=2)
    ok, results = await run(agent, body, "tx-t", PuppetRun(kill_grace=1.0))
    assert not ok
    assert results["_error"]["kind"] == "podium.puppet/timeout"
    assert results["_error"]["msg"].startswith("puppet apply did not finish within 2 s")
    assert runner.running_pid(state_dir(agent)) is None
    assert not (state_dir(agent) / "agent_catalog_run.lock").exists()


@needs_puppet
async def test_a_run_outlives_the_agent_and_is_followed_after_a_restart(
    agent: State, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    manifest = (
        f"exec {{ 'wait': command => \"/bin/sh -c 'while [ ! -e {go} ]; do sleep 0.05; done'\" }}\n"
        f"file {{ '{tmp_path}/done': content => 'x', require => Exec['wait'] }}\n"
    )
    body = request(agent, manifest)
    action = PuppetRun()
    started = record(agent, body, "tx-r")
    running = asyncio.ensure_future(action.run(agent, started, action.parse(body)))
    lock = state_dir(agent) / "agent_catalog_run.lock"
    await until(lambda: runner.running_pid(state_dir(agent)) is not None, what="puppet to run")
    running.cancel()  # the agent goes away
    with contextlib.suppress(asyncio.CancelledError):
        await running
    wrapper = taskrun.recorded_pid(agent.spool.path("tx-r"))
    assert wrapper is not None and lock.exists()  # Puppet still runs
    restarted = PuppetRun()
    resumed = asyncio.ensure_future(restarted.resume(agent, started))
    await until(lambda: restarted.busy, what="the restarted agent to follow the run")
    go.touch()
    ok, results = await asyncio.wait_for(resumed, DEADLINE)
    assert ok, results.get("_error")
    assert (results["status"], results["exit_code"]) == ("changed", 2)
    assert (tmp_path / "done").exists() and not lock.exists()
    # Resumed once more (the agent restarted again before it sent the result):
    ok, again = await PuppetRun().resume(agent, started)
    assert (ok, again["status"], again["exit_code"]) == (True, "changed", 2)


@needs_puppet
async def test_a_run_waits_for_puppets_own_run_up_to_its_timeout(
    agent: State, tmp_path: Path
) -> None:
    daemon = fake_puppet_run(tmp_path)
    try:
        assert (await PuppetStatus().answer(agent, {}))["running"] is True
        body = request(agent, f"file {{ '{tmp_path}/x': content => 'x' }}\n", timeout=1)
        ok, results = await run(agent, body, "tx-w", PuppetRun(lock_poll=0.05))
        assert (ok, results["_error"]["kind"]) == (False, "podium.puppet/timeout")
        assert "another Puppet run held node1.example" in results["_error"]["msg"]
        assert not (agent.spool.path("tx-w") / "pid").exists()  # never started
        action = PuppetRun(lock_poll=0.05)
        waiting = asyncio.ensure_future(run(agent, {**body, "timeout": None}, "tx-w2", action))
        await until(lambda: action.busy, what="the run to wait for its turn")
        assert not (agent.spool.path("tx-w2") / "pid").exists()
    finally:
        daemon.kill()
        daemon.wait()
    ok, results = await asyncio.wait_for(waiting, DEADLINE)
    assert ok and (tmp_path / "x").read_text() == "x"


@needs_puppet
async def test_a_stale_run_lock_does_not_hold_runs_up(agent: State, tmp_path: Path) -> None:
    state_dir(agent).mkdir(parents=True)
    # The pid of a process that is not Puppet (this one): a run that died left it.
    (state_dir(agent) / "agent_catalog_run.lock").write_text(str(os.getpid()))
    assert runner.running_pid(state_dir(agent)) is None
    ok, results = await run(agent, request(agent, f"file {{ '{tmp_path}/x': content => 'x' }}"))
    assert ok, results.get("_error")


@settings(suppress_health_check=list(HealthCheck), deadline=None, max_examples=200)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_puppet_resource_output_is_read_or_refused_with_a_validation_error(data: bytes) -> None:
    try:
        resources = resources_of(data)
    except ValidationError:
        return
    assert all(set(r) == {"type", "title", "parameters"} for r in resources)
