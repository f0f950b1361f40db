"""The registry of actions, and status/query answered from the spool."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from podium.agent.actions import ImmediateAction, Registry, default_registry
from podium.agent.actions.status import StatusQuery
from podium.agent.config import AgentConfig
from podium.agent.filecache import FileCache
from podium.agent.spool import Spool
from podium.errors import ProtocolError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class Ping(ImmediateAction):
    module = "demo"
    action = "ping"

    async def answer(self, agent: Any, params: dict[str, Any]) -> dict[str, Any]:
        return {}


def test_the_default_registry_offers_tasks_puppet_and_status_queries():
    registry = default_registry()
    assert registry.names() == [
        "puppet/disable",
        "puppet/enable",
        "puppet/resource",
        "puppet/run",
        "puppet/status",
        "puppet/stop",
        "status/query",
        "task/run",
        "task/stop",
    ]
    assert isinstance(registry.get("status", "query"), StatusQuery)
    assert registry.get("nosuch", "run") is None
    assert registry.unknown("nosuch", "run") == (
        "unknown action nosuch/run; this agent offers puppet/disable, puppet/enable, puppet/re"
        "source, puppet/run, puppet/status, puppet/stop, status/query, task/run, task/stop"
    )


def test_an_action_is_registered_once():
    registry = Registry([Ping()])
    with pytest.raises(ValueError, match="demo/ping is already registered"):
        registry.register(Ping())


def test_an_action_with_a_name_that_cannot_travel_is_refused():
    class Bad(Ping):
        module = "Demo Module"

    with pytest.raises(ProtocolError, match="invalid module"):
        Registry([Bad()])


@dataclass
class State:
    """What status/query needs of an agent."""

    spool: Spool
    config: AgentConfig = field(
        default_factory=lambda: AgentConfig(certname="n", server_url="https://x", brokers=())
    )
    cache: FileCache = field(default=None)  # type: ignore[assignment]
    claiming: set[str] = field(default_factory=set)

    def accepting(self, txid: str) -> bool:
        return txid in self.claiming


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(spool=Spool(tmp_path / "spool"))


def _create(spool: Spool, txid: str) -> None:
    spool.create(txid, module="task", action="run", params={}, requester="pcp://s/server", now=T0)


async def test_status_of_each_state_of_a_transaction(state: State) -> None:
    query = StatusQuery()
    _create(state.spool, "accepted")
    _create(state.spool, "done")
    state.spool.finish("done", status="failure", results={"_error": {"msg": "x"}}, now=T0)
    state.claiming.add("arriving")
    answers = {
        txid: await query.answer(state, {"transaction_id": txid})
        for txid in ("accepted", "done", "arriving", "never")
    }
    assert answers == {
        "accepted": {"transaction_id": "accepted", "status": "running"},
        "done": {
            "transaction_id": "done",
            "status": "failure",
            "results": {"_error": {"msg": "x"}},
        },
        "arriving": {"transaction_id": "arriving", "status": "running"},
        "never": {"transaction_id": "never", "status": "unknown"},
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "invalid transaction_id None"),
        ({"transaction_id": "../x"}, "invalid transaction_id '../x'"),
        ({"transaction_id": "a", "verbose": True}, "unknown param"),
    ],
)
async def test_a_status_query_needs_one_valid_transaction_id(
    state: State, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        await StatusQuery().answer(state, params)
