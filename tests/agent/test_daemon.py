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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import podium
from identities import Identities
from podium.agent.actions import (
    AgentState,
    ImmediateAction,
    Outcome,
    Registry,
    SpooledAction,
    default_registry,
)
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
        self, broker: Broker, ids: Identities, vardir: Path, actions: Registry | None = None
    ) -> None:
        cert, key = ids.files("web-01")
        self.config = AgentConfig(
            certname="web-01",
            server_url="https://127.0.0.1:1",
            brokers=(f"wss://127.0.0.1:{broker.port}/pcp/v2",),
            vardir=vardir,
            cacert=ids.ca.ca_cert_path,
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


async def test_a_request_resent_while_it_is_being_recorded_runs_once(broker, tmp_path, monkeypatch):
    broker, ids = broker
    controller = Controller(broker)
    marker = tmp_path / "marker"
    request = task_request("tx9", "podium::command", command=f"echo ran >> {marker}; echo ok")
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        release = threading.Event()
        create = agent.spool.create

        def slow_create(*args: Any, **kwargs: Any) -> TransactionRecord:
            release.wait(DEADLINE)
            return create(*args, **kwargs)

        monkeypatch.setattr(agent.spool, "create", slow_create)
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
            msg.NonBlockingRequest(transaction_id="tx5", module="puppet", action="run", params={})
        )
        error = await controller.next(msg.RpcError)
    assert error.transaction_id == "tx5"
    assert error.description == (
        "unknown action puppet/run; this agent offers status/query, task/run"
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


def _disk_full(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    def create(*args: Any, **kwargs: Any) -> TransactionRecord:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(agent.spool, "create", create)


def _spool_is_a_file(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.rmtree(agent.spool.root)
    agent.spool.root.write_text("not a folder\n")


@pytest.mark.parametrize(
    ("break_spool", "reason"),
    [(_disk_full, "No space left on device"), (_spool_is_a_file, "Not a directory")],
)
async def test_a_spool_that_fails_refuses_the_request_and_the_agent_stays_connected(
    broker, tmp_path, monkeypatch, break_spool, reason
):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent") as agent:
        await connected(broker)
        session = broker.router.get("pcp://web-01/agent")
        break_spool(agent, monkeypatch)
        controller.send(task_request("tx11", "podium::echo", message="x"))
        error = await controller.next(msg.RpcError)
        assert error.description == (
            f"the agent cannot record transaction tx11 in its spool ({reason}); it was not run"
        )
        controller.send(status_query("q-tx11", "tx11"))  # still connected, still answering
        assert (await controller.next(msg.BlockingResponse)).results["status"] == "unknown"
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
            "this agent offers demo/double, demo/ping, status/query, task/run"
        )
