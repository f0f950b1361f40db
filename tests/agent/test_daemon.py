"""The agent daemon against a real broker over TLS, with an in-process controller."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from identities import Identities
from podium.agent.config import AgentConfig
from podium.agent.daemon import Agent
from podium.agent.filecache import FileCache
from podium.agent.spool import Spool
from podium.broker.routing import Router
from podium.broker.server import Broker, LocalSession
from podium.pki.tls import client_context, server_context
from podium.protocol import messages as msg
from podium.protocol.envelope import Envelope
from podium.tasks import CodeDir, builtin_codedir
from podium.tasks.codedir import BUILTIN_MODULES

SERVER = "podium-server"


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
        async with asyncio.timeout(10):
            while True:
                message = await self.inbox.get()
                if isinstance(message, kind):
                    return message


def task_request(txid: str, task: str, **params: Any) -> msg.NonBlockingRequest:
    found = CodeDir(builtin_codedir()).task("production", task)
    spec = {
        "filename": found.executable.filename,
        "uri": {"path": f"/files/{found.executable.filename}", "params": {}},
        "sha256": found.executable.sha256,
        "size_bytes": found.executable.size_bytes,
    }
    body = {"task": found.name, "input": params, "files": [spec], "input_method": None}
    return msg.NonBlockingRequest(transaction_id=txid, module="task", action="run", params=body)


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
    def __init__(self, broker: Broker, ids: Identities, vardir: Path) -> None:
        cert, key = ids.files("web-01")
        self.config = AgentConfig(
            certname="web-01",
            server_url="https://127.0.0.1:1",
            brokers=(f"wss://127.0.0.1:{broker.port}/pcp/v2",),
            vardir=vardir,
            cacert=ids.ca.ca_cert_path,
        )
        context = client_context(ca=ids.ca.ca_cert_path, cert=cert, key=key)
        self.agent = Agent(self.config, ssl_context=context)
        self.agent.cache = FileCache(self.config.cachedir, self._fetch)
        self.task: asyncio.Task[None] | None = None

    async def _fetch(self, path: str) -> bytes:
        name = path.rsplit("/", 1)[-1]
        return (BUILTIN_MODULES / "podium/tasks" / name).read_bytes()

    async def __aenter__(self) -> Agent:
        self.task = asyncio.create_task(self.agent.run())
        return self.agent

    async def __aexit__(self, *exc: object) -> None:
        self.agent.stop()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


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
    async with asyncio.timeout(10):
        while broker.router.get("pcp://web-01/agent") is None:
            await asyncio.sleep(0.01)


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
        async with asyncio.timeout(5):
            while agent.spool.unacknowledged():
                await asyncio.sleep(0.01)


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


async def test_status_queries_are_answered_from_the_spool(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(task_request("tx3", "podium::echo", message="x"))
        await controller.next(msg.NonBlockingResponse)
        for asked, status in (("tx3", "success"), ("never-seen", "unknown")):
            query = msg.BlockingRequest(
                transaction_id=f"q-{asked}",
                module="status",
                action="query",
                params={"transaction_id": asked},
            )
            controller.send(query)
            answer = await controller.next(msg.BlockingResponse)
            assert answer.results["status"] == status
            assert answer.results["transaction_id"] == asked


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


async def test_an_unknown_action_is_refused_with_an_rpc_error(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(
            msg.NonBlockingRequest(transaction_id="tx5", module="reboot", action="now", params={})
        )
        error = await controller.next(msg.RpcError)
        assert "unknown action reboot/now" in error.description


async def test_a_task_file_that_does_not_match_its_hash_is_not_run(broker, tmp_path):
    broker, ids = broker
    controller = Controller(broker)
    request = task_request("tx6", "podium::echo", message="x")
    request.params["files"][0]["sha256"] = "0" * 64
    async with RunningAgent(broker, ids, tmp_path / "agent"):
        await connected(broker)
        controller.send(request)
        final = await controller.next(msg.NonBlockingResponse)
        assert "_error" in final.results
        assert not (tmp_path / "agent" / "spool" / "tx6" / "stdout").exists()


async def test_a_task_started_just_before_the_agent_died_is_still_reported(broker, tmp_path):
    """The agent died after starting the wrapper but before noting its pid."""
    from podium.agent.taskrun import start_task

    broker, ids = broker
    controller = Controller(broker)
    vardir = tmp_path / "agent"
    spool = accepted(vardir, "tx7", controller)
    script = tmp_path / "slow.sh"
    script.write_text("sleep 0.3; echo survived\n")
    await start_task(
        spool.path("tx7"), script, task_name="t", params={}, input_method=None,
        installdir=tmp_path,
    )  # fmt: skip
    async with RunningAgent(broker, ids, vardir):
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
