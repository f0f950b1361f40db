"""The agent sends its facts on connect, then again when they change (checked every
``facts_interval``), and refreshes them every Nth check."""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import replace
from typing import Any

from test_daemon import Controller, RunningAgent, broker  # noqa: F401 - broker: a fixture

from podium.agent.config import AgentConfig
from podium.agent.daemon import Agent
from podium.agent.facts import FactsTracker
from podium.protocol import messages as msg
from waiting import until


async def test_the_agent_sends_its_facts_again_when_an_external_fact_changes(broker, tmp_path):  # noqa: F811
    broker, ids = broker
    controller = Controller(broker)
    factsdir = tmp_path / "facts.d"
    factsdir.mkdir()
    running = RunningAgent(broker, ids, tmp_path / "agent")
    running.agent.config = replace(running.agent.config, facts_interval=0.05, factsdir=(factsdir,))
    async with running:
        first = await controller.next(msg.FactsUpdate)
        assert "role" not in first.facts
        (factsdir / "role.txt").write_text("role=web\n")
        update = await controller.next(msg.FactsUpdate)
        while "role" not in update.facts:  # a refresh may come first
            update = await controller.next(msg.FactsUpdate)
    assert update.facts["role"] == "web"
    assert update.facts["certname"] == "web-01"
    assert update.features == first.features


class Recorder:
    """An agent whose facts are whatever the test says, and whose sends are recorded.

    Each check of the facts waits for the test to :meth:`allow` it, so the test knows
    how many checks were made: a check that waits means the one before it, and its
    send if any, are done.
    """

    def __init__(self, tmp_path: Any, *, refresh_every: int) -> None:
        config = AgentConfig(
            certname="web-01",
            server_url="https://127.0.0.1:1",
            brokers=("wss://127.0.0.1:1/pcp/v2",),
            vardir=tmp_path,
            facts_interval=0.01,
        )
        self.agent = Agent(config, ssl_context=ssl.create_default_context())
        self.agent._facts = FactsTracker(refresh_every=refresh_every)
        self.agent._ws = object()  # type: ignore[assignment] # "connected"
        self.facts: dict[str, Any] = {"certname": "web-01", "os": {"family": "Debian"}}
        self.checks = 0  # checks allowed and made
        self.waiting = 0  # checks begun (at most one waits for the test)
        self._allowed = threading.Semaphore(0)
        self.sent: list[dict[str, Any]] = []
        self.agent._gather = self._gather  # type: ignore[method-assign]
        self.agent._send = self._send  # type: ignore[method-assign]

    def allow(self, checks: int) -> None:
        for _ in range(checks):
            self._allowed.release()

    def _gather(self) -> dict[str, Any]:  # in a worker thread
        self.waiting += 1
        self._allowed.acquire()
        self.checks += 1
        return {**self.facts, "system_uptime": {"seconds": self.checks}}

    def _send(self, message: msg.Message, target: str, in_reply_to: str | None = None) -> bool:
        assert isinstance(message, msg.FactsUpdate)
        assert target == "pcp://*/server"
        self.sent.append(message.facts)
        return True


async def test_unchanged_facts_are_not_sent_again_until_the_refresh(tmp_path):
    recorder = Recorder(tmp_path, refresh_every=5)
    recorder.allow(1)
    await recorder.agent._send_facts()  # on connect
    watching = asyncio.create_task(recorder.agent._watch_facts())

    async def checked(count: int) -> None:
        """Let the watcher make checks up to the ``count``th, and see it done."""
        recorder.allow(count - recorder.checks)
        await until(lambda: recorder.waiting == count + 1, what=f"check {count} done")

    try:
        await checked(5)
        assert len(recorder.sent) == 1  # four checks found only volatile changes
        await checked(6)
        assert len(recorder.sent) == 2  # the fifth check refreshed them
        assert recorder.sent[1]["system_uptime"]["seconds"] == 6
        recorder.facts = {**recorder.facts, "role": "web"}
        await checked(7)
        assert len(recorder.sent) == 3
        assert recorder.sent[2]["role"] == "web"
    finally:
        watching.cancel()
        recorder.allow(1)  # the check waiting in its thread ends
