"""The agent daemon against a real broker over TLS, with an in-process controller."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import podium
from identities import Identities
from podium.agent import taskrun
from podium.agent.actions import (
    AgentState,
    ImmediateAction,
    Outcome,
    Registry,
    SpooledAction,
    default_registry,
)
from podium.agent.actions.status import StatusQuery
from podium.agent.actions.task import TaskRun, TaskStop
from podium.agent.config import AgentConfig
from podium.agent.daemon import Agent
from podium.agent.filecache import FileCache
from podium.agent.spool import Spool, TransactionRecord
from podium.agent.taskrun import start_task
from podium.broker.routing import Router
from podium.broker.server import Broker, LocalSession
from podium.errors import ProtocolError
from podium.pki.tls import client_context, server_context
from podium.protocol import messages as msg
from podium.protocol.envelope import Envelope
from waiting import DEADLINE, until

SERVER = "podium-server"
BUILTIN_TASKS = Path(podium.__file__).parent / "data" / "modules" / "podium" / "tasks"
TIMEOUT_KIND = "puppetlabs.tasks/task-timeout"
# What the fake file server serves, by SHA-256 (content-addressed, so shared safely).
_CONTENT: dict[str, bytes] = {}


class Controller:
    """Records what reaches the controller; sends requests as the server would."""

    def __init__(self, broker: Broker) -> None:
        self.inbox: asyncio.Queue[msg.Message] = asyncio.Queue()
        self.session: LocalSession = broker.attach(SERVER, "server", self._deliver)

    def _deliver(self, env: Envelope) -> None:
        self.inbox.put_nowait(msg.decode(env))

    def send(self, message: msg.Message, target: str = "pcp://web-01/agent") -> None:
        self.session.send(msg.encode(message, sender=self.session.uri, target=target))

    async def next(self, kind: type[msg.Message]) -> Any:
        async with asyncio.timeout(DEADLINE):
            while True:
                message = await self.inbox.get()
                if isinstance(message, kind):
                    return message

    async def until(self, kind: type[msg.Message]) -> list[msg.Message]:
        """Every message received up to the next ``kind``, that one last."""
        received = []
        async with asyncio.timeout(DEADLINE):
            while not received or not isinstance(received[-1], kind):
                received.append(await self.inbox.get())
        return received


def file_spec(filename: str, content: bytes) -> dict[str, Any]:
    sha256 = hashlib.sha256(content).hexdigest()
    _CONTENT[sha256] = content
    return {
        "filename": filename,
        "uri": {"path": f"/files/{sha256}", "params": {"environment": "production"}},
        "sha256": sha256,
        "size_bytes": len(content),
    }


def request(txid: str, params: dict[str, Any]) -> msg.NonBlockingRequest:
    return msg.NonBlockingRequest(transaction_id=txid, module="task", action="run", params=params)


def task_request(txid: str, task: str, **task_input: Any) -> msg.NonBlockingRequest:
    """A request for one of the built-in tasks, as the server sends it."""
    name = task.split("::")[1]
    spec = file_spec(f"{name}.sh", (BUILTIN_TASKS / f"{name}.sh").read_bytes())
    return request(
        txid, {"task": task, "input": task_input, "files": [spec], "input_method": "environment"}
    )


def script_request(
    txid: str, script: str, *, task_input: dict[str, Any] | None = None, **params: Any
) -> msg.NonBlockingRequest:
    """A request for a task ``mymod::script`` with ``script`` as its executable."""
    spec = file_spec("script.sh", script.encode())
    body = {"task": "mymod::script", "input": task_input or {}, "files": [spec], **params}
    return request(txid, body)


def status_query(txid: str, asked: str) -> msg.BlockingRequest:
    params = {"transaction_id": asked}
    return msg.BlockingRequest(transaction_id=txid, module="status", action="query", params=params)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[tuple[Broker, Identities]]:
    ids = Identities(tmp_path / "pki")
    cert, key = ids.files("broker", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    broker = Broker(
        Router(controllers={SERVER}),
        ssl_context=server_context(
            cert=cert, key=key, ca=ids.ca.ca_cert_path, require_client_cert=True
        ),
        port=0,
    )
    await broker.start()
    yield broker, ids
    await broker.stop()


class RunningAgent:
    def __init__(
        self,
        broker: Broker,
        ids: Identities,
        vardir: Path,
        actions: Registry | None = None,
        **config: Any,
    ) -> None:
        cert, key = ids.files("web-01")
        self.config = AgentConfig(
            certname="web-01",
            server_url="https://127.0.0.1:1",
            brokers=(f"wss://127.0.0.1:{broker.port}/pcp/v2",),
            vardir=vardir,
            cacert=ids.ca.ca_cert_path,
            **config,
        )
        context = client_context(ca=ids.ca.ca_cert_path, cert=cert, key=key)
        self.agent = Agent(self.config, ssl_context=context, actions=actions)
        self.agent.cache = FileCache(self.config.cachedir, self._fetch)
        self.task: asyncio.Task[None] | None = None

    async def _fetch(self, path: str) -> bytes:
        return _CONTENT[path.split("?")[0].rsplit("/", 1)[-1]]

    async def __aenter__(self) -> Agent:
        self.task = asyncio.create_task(self.agent.run())
        return self.agent

    async def __aexit__(self, *exc: object) -> None:
        self.agent.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, DEADLINE)


def accepted(vardir: Path, txid: str, controller: Controller) -> Spool:
    """A spool in which ``txid`` was accepted by an agent that then died."""
    spool = Spool(vardir / "spool")
    spool.create(
        txid,
        module="task",
        action="run",
        params={},
        requester=controller.session.uri,
        now=datetime.now(UTC),
    )
    return spool


async def connected(broker: Broker) -> None:
    await until(lambda: broker.router.get("pcp://web-01/agent") is not None)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] != b"Z"


# -- running and reporting ------------------------------------------------------------


async def test_the_agent_runs_a_task_and_reports_it_once_acknowledged(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        facts = await controller.next(msg.FactsUpdate)
        assert facts.facts["certname"] == "web-01"
        controller.send(task_request("tx1", "podium::echo", message="hello"))
        assert await controller.next(msg.ProvisionalResponse) == msg.ProvisionalResponse("tx1")
        final = await controller.next(msg.NonBlockingResponse)
        assert final.results == {"_output": "hello\n"}
        assert agent.spool.unacknowledged()[0].transaction_id == "tx1"
        controller.send(msg.ResultAck(transaction_id="tx1"))
        await until(lambda: not agent.spool.unacknowledged())


async def test_the_agent_reports_what_it_can_run_beside_its_facts(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        update = await controller.next(msg.FactsUpdate)
    assert "shell" in update.features
    assert update.features == sorted(update.features)
    assert "features" not in update.facts


async def test_a_resent_transaction_is_answered_from_the_spool_and_not_run_again(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    marker = tmp_path / "marker"
    request = task_request("tx2", "podium::command", command=f"echo ran >> {marker}; echo ok")
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(request)
        first = await controller.next(msg.NonBlockingResponse)
        controller.send(request)
        second = await controller.next(msg.NonBlockingResponse)
    assert first == second
    assert marker.read_text() == "ran\n"


def _hold_spool_create(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make the agent's spool wait, when it records a request, until the event is set."""
    release = threading.Event()
    create = agent.spool.create

    def slow_create(*args: Any, **kwargs: Any) -> TransactionRecord:
        release.wait(DEADLINE)
        return create(*args, **kwargs)

    monkeypatch.setattr(agent.spool, "create", slow_create)
    return release


async def test_a_request_resent_while_it_is_being_recorded_runs_once(broker, tmp_path, monkeypatch):
    broker, ids = broker
    controller = Controller(broker)
    marker = tmp_path / "marker"
    request = task_request("tx9", "podium::command", command=f"echo ran >> {marker}; echo ok")
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        release = _hold_spool_create(agent, monkeypatch)
        controller.send(request)
        controller.send(request)  # arrives while the first is still being recorded
        controller.send(status_query("q-tx9", "tx9"))
        status = await controller.next(msg.BlockingResponse)
        assert status.results == {"transaction_id": "tx9", "status": "running"}
        release.set()
        assert await controller.next(msg.ProvisionalResponse) == msg.ProvisionalResponse("tx9")
        assert await controller.next(msg.ProvisionalResponse) == msg.ProvisionalResponse("tx9")
        final = await controller.next(msg.NonBlockingResponse)
        controller.send(request)
        assert await controller.next(msg.NonBlockingResponse) == final
    assert final.results == {"_output": "ok\n"}
    assert marker.read_text() == "ran\n"


async def test_status_queries_are_answered_from_the_spool(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(task_request("tx3", "podium::echo", message="x"))
        await controller.next(msg.NonBlockingResponse)
        for asked, status in (("tx3", "success"), ("never-seen", "unknown")):
            controller.send(status_query(f"q-{asked}", asked))
            answer = await controller.next(msg.BlockingResponse)
            assert answer.results["status"] == status
            assert answer.results["transaction_id"] == asked
        controller.send(status_query("q-bad", "../etc"))
        error = await controller.next(msg.RpcError)
        assert error.transaction_id == "q-bad"
        assert "invalid transaction_id '../etc'" in error.description


async def test_an_unacknowledged_result_is_sent_again_after_a_restart(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(task_request("tx4", "podium::echo", message="keep me"))
        await controller.next(msg.NonBlockingResponse)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        again = await controller.next(msg.NonBlockingResponse)
        assert again.transaction_id == "tx4"
        assert again.results == {"_output": "keep me\n"}


# -- what is refused ------------------------------------------------------------------


async def test_an_unknown_action_is_refused_with_what_the_agent_offers(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(
            msg.NonBlockingRequest(transaction_id="tx5", module="nosuch", action="run", params={})
        )
        error = await controller.next(msg.RpcError)
    assert error.transaction_id == "tx5"
    assert error.description == (
        "unknown action nosuch/run; this agent offers puppet/disable, puppet/enable, puppet/re"
        "source, puppet/run, puppet/status, puppet/stop, status/query, task/run, task/stop"
    )
    assert not (tmp_path / "agent" / "spool" / "tx5").exists()


async def test_an_invalid_task_request_is_refused_and_not_recorded(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    bad = task_request("tx10", "podium::echo", message="x")
    bad.params["timeout"] = -5
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(bad)
        error = await controller.next(msg.RpcError)
        assert error.description == (
            "task/run: 'timeout' must be a positive number of seconds, not -5"
        )
        assert not (tmp_path / "agent" / "spool" / "tx10").exists()
        bad.params["timeout"] = 30  # the same id, now a request that can run
        controller.send(bad)
        final = await controller.next(msg.NonBlockingResponse)
    assert final.results == {"_output": "x\n"}


async def test_a_task_file_that_does_not_match_its_hash_is_not_run(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    request = task_request("tx6", "podium::echo", message="x")
    request.params["files"][0]["sha256"] = "0" * 64
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(request)
        final = await controller.next(msg.NonBlockingResponse)
        assert "changed on the server or in transit" in final.results["_error"]["msg"]
        assert not (tmp_path / "agent" / "spool" / "tx6" / "stdout").exists()


def _failing_write(code: int) -> Any:
    """A spool write that fails as the disk or the folder's permissions make it fail."""

    def write(path: Path, data: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    return write


def _disk_full(agent: Agent) -> None:
    agent.spool = Spool(agent.spool.root, write=_failing_write(errno.ENOSPC))


def _not_permitted(agent: Agent) -> None:
    agent.spool = Spool(agent.spool.root, write=_failing_write(errno.EACCES))


def _spool_is_a_file(agent: Agent) -> None:
    shutil.rmtree(agent.spool.root)
    agent.spool.root.write_text("not a folder\n")


@pytest.mark.parametrize(
    ("break_spool", "reason"),
    [
        (_disk_full, "No space left on device; free disk space"),
        (_not_permitted, "Permission denied; fix the folder's permissions"),
        (_spool_is_a_file, "Not a directory; fix the folder's permissions or free disk space"),
    ],
)
async def test_a_spool_that_fails_refuses_the_request_and_the_agent_stays_connected(
    broker, tmp_path, break_spool, reason
):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        session = broker.router.get("pcp://web-01/agent")
        break_spool(agent)
        controller.send(task_request("tx11", "podium::echo", message="x"))
        error = await controller.next(msg.RpcError)
        assert error.description == (
            f"the agent cannot write its spool {agent.spool.path('tx11')}: {reason}, "
            "then send the request again (it was not run)"
        )
        controller.send(status_query("q-tx11", "tx11"))  # still connected, still answering
        assert (await controller.next(msg.BlockingResponse)).results["status"] == "unknown"
        assert broker.router.get("pcp://web-01/agent") is session


async def test_a_request_refused_for_a_failing_spool_runs_once_the_spool_is_fixed(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        working = agent.spool
        _not_permitted(agent)
        controller.send(task_request("tx16", "podium::echo", message="again"))
        assert "Permission denied" in (await controller.next(msg.RpcError)).description
        agent.spool = working
        controller.send(task_request("tx16", "podium::echo", message="again"))
        final = await controller.next(msg.NonBlockingResponse)
    assert final.results == {"_output": "again\n"}


async def test_a_status_query_the_spool_cannot_answer_is_refused_with_the_reason(
    broker, tmp_path, monkeypatch
):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)

        def unreadable(txid: str) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied", str(agent.spool.path(txid)))

        monkeypatch.setattr(agent.spool, "get", unreadable)
        controller.send(status_query("q-tx17", "tx17"))
        answer = await controller.next(msg.RpcError)
    assert answer.description == (
        f"the agent cannot read its spool {agent.spool.root}: Permission denied"
    )


async def test_a_spool_that_fails_under_a_running_task_fails_it_with_the_reason(
    broker, tmp_path, monkeypatch
):
    broker, ids = broker
    controller = Controller(broker)

    def read_outcome(txdir: Path, pid: int | None = None) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", str(txdir / "stdout"))

    monkeypatch.setattr(taskrun, "read_outcome", read_outcome)
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        session = broker.router.get("pcp://web-01/agent")
        controller.send(task_request("tx19", "podium::echo", message="x"))
        final = await controller.next(msg.NonBlockingResponse)
        assert broker.router.get("pcp://web-01/agent") is session
    assert final.results["_error"] == {
        "kind": "podium.agent/spool-error",
        "msg": f"the agent cannot use its spool {agent.spool.path('tx19') / 'stdout'}: "
        "Permission denied; fix the folder's permissions",
        "details": {},
    }


async def test_an_acknowledgement_the_spool_cannot_record_leaves_the_agent_connected(
    broker, tmp_path, monkeypatch
):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        session = broker.router.get("pcp://web-01/agent")
        controller.send(task_request("tx18", "podium::echo", message="x"))
        await controller.next(msg.NonBlockingResponse)
        failed = asyncio.Event()
        loop = asyncio.get_running_loop()

        def acknowledge(txid: str, now: datetime) -> None:  # runs in a worker thread
            loop.call_soon_threadsafe(failed.set)
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(agent.spool, "acknowledge", acknowledge)
        controller.send(msg.ResultAck(transaction_id="tx18"))
        await asyncio.wait_for(failed.wait(), DEADLINE)
        controller.send(status_query("q-tx18", "tx18"))
        assert (await controller.next(msg.BlockingResponse)).results["status"] == "success"
        assert broker.router.get("pcp://web-01/agent") is session


# -- timeouts -------------------------------------------------------------------------


async def test_a_task_past_its_timeout_is_stopped_with_its_children(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    child_pid = tmp_path / "child.pid"
    script = '#!/bin/sh\necho started\nsleep 1000 &\necho $! > "$PT_pidfile"\nwait\n'
    request = script_request("tx12", script, task_input={"pidfile": str(child_pid)}, timeout=0.5)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(request)
        final = await controller.next(msg.NonBlockingResponse)
    assert final.results["_error"] == {
        "kind": TIMEOUT_KIND,
        "msg": "the task did not finish within 0.5 s and was stopped",
        "details": {"timeout": 0.5},
    }
    assert final.results["_output"] == "started\n"  # and the shell's notes on _stderr
    await until(lambda: not running(int(child_pid.read_text())))


async def test_a_task_followed_after_a_restart_is_stopped_at_its_deadline(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    vardir = tmp_path / "agent"
    spool = accepted(vardir, "tx13", controller)
    script = tmp_path / "forever.sh"
    script.write_text("#!/bin/sh\nsleep 1000 &\necho $! > child.pid\nwait\n")
    # An earlier agent started it with 0.5 s to run; it would otherwise run for 1000 s.
    pid = await start_task(
        spool.path("tx13"), script, task_name="t", params={}, input_method=None,
        installdir=tmp_path, time_limit=0.5,
    )  # fmt: skip
    async with RunningAgent(broker, ids, vardir):
        final = await controller.next(msg.NonBlockingResponse)
    assert final.transaction_id == "tx13"
    assert final.results["_error"]["kind"] == TIMEOUT_KIND
    await until(lambda: (tmp_path / "child.pid").exists())
    await until(lambda: not running(int((tmp_path / "child.pid").read_text())))
    await until(lambda: not running(pid))


# -- what is kept ---------------------------------------------------------------------


async def test_the_task_input_is_never_written_to_the_spool(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    secret = "correct-horse-battery-staple"
    started, go = tmp_path / "started", tmp_path / "go"
    script = (
        '#!/bin/sh\ncat >/dev/null\n: > "$PT_started"\n'
        'while [ ! -e "$PT_go" ]; do sleep 0.01; done\necho finished\n'
    )
    request = script_request(
        "tx14", script, task_input={"password": secret, "started": str(started), "go": str(go)}
    )
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        controller.send(request)
        await until(started.exists)  # the task has read its input and runs
        txdir = agent.spool.path("tx14")
        files = [p for p in txdir.rglob("*") if p.is_file()]
        assert txdir / "metadata.json" in files
        assert txdir / "stdin" not in files
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
        stored = json.loads((txdir / "metadata.json").read_text())["params"]
        assert "input" not in stored
        assert stored["task"] == "mymod::script"
        go.touch()
        final = await controller.next(msg.NonBlockingResponse)
    assert final.results == {"_output": "finished\n"}


# -- live output ----------------------------------------------------------------------


def quick_registry(**options: Any) -> Registry:
    """The built-in actions, with a task's output read every 10 ms."""
    return Registry([StatusQuery(), TaskRun(output_interval=0.01, **options), TaskStop()])


def streamed(messages: list[msg.Message], stream: str) -> list[msg.TaskOutput]:
    return [m for m in messages if isinstance(m, msg.TaskOutput) and m.stream == stream]


async def test_a_running_tasks_output_reaches_the_controller_before_it_ends(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    go = tmp_path / "go"
    script = (
        '#!/bin/sh\necho first\nwhile [ ! -e "$PT_go" ]; do sleep 0.01; done\n'
        "echo second >&2\necho third\n"
    )
    request = script_request("tx20", script, task_input={"go": str(go)})
    async with RunningAgent(broker, ids, tmp_path / "agent", actions=quick_registry()):
        await connected(broker)
        controller.send(request)
        first = await controller.next(msg.TaskOutput)
        assert first == msg.TaskOutput("tx20", "stdout", 0, "first\n")  # the task still waits
        go.touch()
        rest = await controller.until(msg.NonBlockingResponse)
    assert streamed(rest, "stdout") == [msg.TaskOutput("tx20", "stdout", 6, "third\n")]
    assert streamed(rest, "stderr") == [msg.TaskOutput("tx20", "stderr", 0, "second\n")]
    assert rest[-1] == msg.NonBlockingResponse("tx20", {"_output": "first\nthird\n"})


async def test_output_chunks_are_bounded_and_never_split_a_character(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    # 60,000 characters of three bytes: chunk boundaries fall inside characters.
    script = "#!/bin/sh\ni=0\nwhile [ $i -lt 6000 ]; do printf '✓✓✓✓✓✓✓✓✓✓'; i=$((i+1)); done\n"
    async with RunningAgent(broker, ids, tmp_path / "agent", actions=quick_registry()):
        await connected(broker)
        controller.send(script_request("tx21", script))
        received = await controller.until(msg.NonBlockingResponse)
    chunks = streamed(received, "stdout")
    assert len(chunks) > 1
    assert all(len(c.data) <= msg.MAX_OUTPUT_CHUNK for c in chunks)
    assert "".join(c.data for c in chunks) == "✓" * 60_000
    offsets = [0]
    for chunk in chunks:
        offsets.append(offsets[-1] + len(chunk.data.encode()))
    assert [c.offset for c in chunks] == offsets[:-1]


async def test_streaming_stops_at_its_limit_and_the_result_keeps_the_whole_output(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    script = "#!/bin/sh\ni=0\nwhile [ $i -lt 500 ]; do printf 'xxxxxxxxxx'; i=$((i+1)); done\n"
    actions = quick_registry(output_limit=1000)
    async with RunningAgent(broker, ids, tmp_path / "agent", actions=actions):
        await connected(broker)
        controller.send(script_request("tx22", script))
        received = await controller.until(msg.NonBlockingResponse)
    assert "".join(c.data for c in streamed(received, "stdout")) == "x" * 1000
    assert received[-1].results == {"_output": "x" * 5000}  # type: ignore[attr-defined]


async def test_a_task_followed_after_a_restart_never_streams_again_what_was_there(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    vardir = tmp_path / "agent"
    spool = accepted(vardir, "tx23", controller)
    script, go = tmp_path / "slow.sh", tmp_path / "go"
    script.write_text(f"echo before\nwhile [ ! -e {go} ]; do sleep 0.01; done\necho after\n")
    await start_task(
        spool.path("tx23"), script, task_name="t", params={}, input_method=None,
        installdir=tmp_path,
    )  # fmt: skip
    await until(lambda: (spool.path("tx23") / "stdout").read_bytes() == b"before\n")
    async with RunningAgent(broker, ids, vardir, actions=quick_registry()):
        await connected(broker)
        go.touch()
        received = await controller.until(msg.NonBlockingResponse)
    assert all(c.offset >= len("before\n") for c in streamed(received, "stdout"))
    assert "before" not in "".join(c.data for c in streamed(received, "stdout"))
    assert received[-1].results == {"_output": "before\nafter\n"}  # type: ignore[attr-defined]


async def test_output_goes_only_to_a_controller(broker, tmp_path):
    broker, ids = broker
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        record = accepted(tmp_path / "other", "tx24", Controller(broker)).get("tx24")
        assert record is not None
        chunk = msg.TaskOutput("tx24", "stdout", 0, "x")
        assert agent.report(record, chunk)
        from_an_agent = replace(record, requester="pcp://web-02/agent")
        assert not agent.report(from_an_agent, chunk)


# -- stopping -------------------------------------------------------------------------


def stop_request(txid: str, asked: str, **params: Any) -> msg.BlockingRequest:
    body = {"transaction_id": asked, **params}
    return msg.BlockingRequest(transaction_id=txid, module="task", action="stop", params=body)


async def test_a_stopped_task_is_killed_with_its_process_group_and_fails_as_stopped(
    broker, tmp_path
):
    broker, ids = broker
    controller = Controller(broker)
    child_pid = tmp_path / "child.pid"
    script = '#!/bin/sh\necho working\nsleep 1000 &\necho $! > "$PT_pidfile"\nwait\n'
    request = script_request("tx30", script, task_input={"pidfile": str(child_pid)})
    async with RunningAgent(broker, ids, tmp_path / "agent", actions=quick_registry()):
        await connected(broker)
        controller.send(request)
        await until(lambda: child_pid.read_text().endswith("\n"))
        controller.send(stop_request("s-tx30", "tx30", reason="maintenance window"))
        received = await controller.until(msg.NonBlockingResponse)
    answers = [m for m in received if isinstance(m, msg.BlockingResponse)]
    assert answers == [msg.BlockingResponse("s-tx30", {"stopped": True})]
    final = received[-1]
    assert isinstance(final, msg.NonBlockingResponse)
    assert final.results["_error"] == {
        "kind": "podium.tasks/task-stopped",
        "msg": "the task was stopped: maintenance window",
        "details": {},
    }
    assert final.results["_output"] == "working\n"
    await until(lambda: not running(int(child_pid.read_text())))


async def test_stopping_a_transaction_that_is_not_running_says_why(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(stop_request("s1", "never-seen"))
        assert (await controller.next(msg.BlockingResponse)).results == {
            "stopped": False,
            "message": "no task never-seen is running on this agent",
        }
        controller.send(task_request("tx31", "podium::echo", message="x"))
        await controller.next(msg.NonBlockingResponse)
        controller.send(stop_request("s2", "tx31"))
        assert (await controller.next(msg.BlockingResponse)).results == {
            "stopped": False,
            "message": "task tx31 has already ended (success)",
        }
        controller.send(stop_request("s3", "tx31", force=True))
        assert (await controller.next(msg.RpcError)).description == (
            "task/stop: unknown param(s) force; it takes reason, transaction_id"
        )


async def test_a_task_stopped_while_it_waits_for_a_place_is_never_run(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    go, marker = tmp_path / "go", tmp_path / "marker"
    blocker = script_request(
        "tx32",
        '#!/bin/sh\necho busy\nwhile [ ! -e "$PT_go" ]; do sleep 0.01; done\n',
        task_input={"go": str(go)},
    )
    queued = task_request("tx33", "podium::command", command=f"touch {marker}")
    actions = quick_registry()
    async with RunningAgent(broker, ids, tmp_path / "agent", actions=actions, concurrency=1):
        await connected(broker)
        controller.send(blocker)
        await controller.next(msg.TaskOutput)  # it runs, and holds the only place
        controller.send(queued)
        assert await controller.next(msg.ProvisionalResponse) == msg.ProvisionalResponse("tx33")
        controller.send(stop_request("s-tx33", "tx33"))
        assert (await controller.next(msg.BlockingResponse)).results == {"stopped": True}
        stopped = await controller.next(msg.NonBlockingResponse)
        go.touch()
        finished = await controller.next(msg.NonBlockingResponse)
    assert stopped == msg.NonBlockingResponse(
        "tx33",
        {
            "_error": {
                "kind": "podium.tasks/task-stopped",
                "msg": "the task was stopped: on request",
                "details": {},
            }
        },
    )
    assert finished.transaction_id == "tx32"
    assert not marker.exists()


async def test_a_stop_sent_while_the_request_is_being_recorded_stops_it(
    broker, tmp_path, monkeypatch
):
    broker, ids = broker
    controller = Controller(broker)
    marker = tmp_path / "marker"
    request = task_request("tx34", "podium::command", command=f"touch {marker}")
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        release = _hold_spool_create(agent, monkeypatch)
        controller.send(request)
        await until(lambda: agent.accepting("tx34"))
        controller.send(stop_request("s-tx34", "tx34", reason="changed my mind"))
        controller.send(status_query("q-tx34", "tx34"))  # answered: the stop waits alone
        assert (await controller.next(msg.BlockingResponse)).transaction_id == "q-tx34"
        release.set()
        received = await controller.until(msg.NonBlockingResponse)
    answers = [m for m in received if isinstance(m, msg.BlockingResponse)]
    assert answers == [msg.BlockingResponse("s-tx34", {"stopped": True})]
    assert received[-1].results["_error"]["msg"] == (  # type: ignore[attr-defined]
        "the task was stopped: changed my mind"
    )
    assert not marker.exists()


# -- recovery -------------------------------------------------------------------------


async def test_a_task_started_just_before_the_agent_died_is_still_reported(broker, tmp_path):
    """The agent died after starting the wrapper but before noting its pid."""
    broker, ids = broker
    controller = Controller(broker)
    vardir = tmp_path / "agent"
    spool = accepted(vardir, "tx7", controller)
    script, go = tmp_path / "slow.sh", tmp_path / "go"
    script.write_text(f"while [ ! -e {go} ]; do sleep 0.01; done\necho survived\n")
    await start_task(
        spool.path("tx7"), script, task_name="t", params={}, input_method=None,
        installdir=tmp_path,
    )  # fmt: skip
    async with RunningAgent(broker, ids, vardir):
        await connected(broker)  # the agent has recovered the task, which still runs
        go.touch()
        final = await controller.next(msg.NonBlockingResponse)
    assert final.transaction_id == "tx7"
    assert final.results == {"_output": "survived\n"}


async def test_a_task_cut_short_by_a_reboot_is_reported_as_lost(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    vardir = tmp_path / "agent"
    spool = accepted(vardir, "tx8", controller)
    # The wrapper wrote its pid in an earlier boot: that pid may be anything now.
    (spool.path("tx8") / "pid").write_text(f"{os.getpid()} an-earlier-boot\n")
    async with RunningAgent(broker, ids, vardir):
        final = await controller.next(msg.NonBlockingResponse)
    assert final.results["_error"]["kind"] == "podium.agent/lost"
    assert "restarted while the task ran" in final.results["_error"]["msg"]


async def test_a_request_accepted_but_never_started_is_closed_and_its_input_removed(
    broker, tmp_path
):
    broker, ids = broker
    controller = Controller(broker)
    vardir = tmp_path / "agent"
    spool = accepted(vardir, "tx15", controller)
    (spool.path("tx15") / "stdin").write_text('{"password": "left behind"}')
    async with RunningAgent(broker, ids, vardir):
        final = await controller.next(msg.NonBlockingResponse)
    assert final.results["_error"]["kind"] == "podium.agent/interrupted"
    assert not (spool.path("tx15") / "stdin").exists()


# -- actions join by registering ------------------------------------------------------


class Ping(ImmediateAction):
    module = "demo"
    action = "ping"

    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        return {"pong": params.get("n")}


class Double(SpooledAction[int]):
    module = "demo"
    action = "double"

    def parse(self, params: dict[str, Any]) -> int:
        if not isinstance(params.get("n"), int):
            raise ProtocolError("demo/double: n must be a whole number")
        return int(params["n"])

    async def run(self, agent: AgentState, record: TransactionRecord, request: int) -> Outcome:
        return True, {"doubled": 2 * request}

    async def resume(self, agent: AgentState, record: TransactionRecord) -> Outcome:
        return False, {"_error": {"kind": "demo/lost", "msg": "lost", "details": {}}}


async def test_an_action_joins_by_being_registered(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    actions = default_registry()
    actions.register(Ping())
    actions.register(Double())
    async with RunningAgent(broker, ids, tmp_path / "agent", actions=actions):
        await connected(broker)
        params = {"n": 21}
        controller.send(msg.BlockingRequest("p1", module="demo", action="ping", params=params))
        assert (await controller.next(msg.BlockingResponse)).results == {"pong": 21}
        controller.send(msg.NonBlockingRequest("d1", module="demo", action="double", params=params))
        assert await controller.next(msg.ProvisionalResponse) == msg.ProvisionalResponse("d1")
        assert (await controller.next(msg.NonBlockingResponse)).results == {"doubled": 42}
        controller.send(msg.NonBlockingRequest("d2", module="demo", action="double", params={}))
        assert (await controller.next(msg.RpcError)).description == (
            "demo/double: n must be a whole number"
        )
        controller.send(msg.NonBlockingRequest("d3", module="demo", action="halve", params={}))
        assert (await controller.next(msg.RpcError)).description == (
            "unknown action demo/halve; "
            "this agent offers demo/double, demo/ping, puppet/disable, puppet/enable, "
            "puppet/resource, puppet/run, puppet/status, puppet/stop, status/query, task/run, "
            "task/stop"
        )
