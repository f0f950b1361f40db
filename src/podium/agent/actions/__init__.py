"""The PXP actions an agent offers, looked up by module and action name.

The connection loop (:mod:`podium.agent.daemon`) knows no action by name: it finds the
request's ``(module, action)`` in a :class:`Registry` and hands the request over. An
action is one of two kinds:

- :class:`ImmediateAction` is answered at once from what the agent knows, with a
  blocking response, and leaves nothing in the spool (``status``/``query``).
- :class:`SpooledAction` is recorded in the spool before it is answered with a
  provisional response, runs in the agent's bounded pool, and sends its result until
  the controller acknowledges it (``task``/``run``). Its request is checked by the
  action (:meth:`~SpooledAction.parse`, pure) before anything is written, and the
  action says what of it may be kept on disk (:meth:`~SpooledAction.stored`): a task's
  input may hold passwords. After a restart, the agent hands each unfinished
  transaction back to its action (:meth:`~SpooledAction.resume`).

While the agent has a spooled transaction in hand (queued, running, or followed after a
restart) it keeps a :class:`StopSignal` for it: an action that can be stopped
(``task``/``stop`` stops ``task``/``run``) sets it, and the action running the
transaction watches it (:meth:`AgentState.stop_signal`). One stopped while it still
waits for a place in the pool is never run: its outcome is
:meth:`~SpooledAction.stopped`.

A new action joins by being registered (:func:`default_registry` lists the built-in
ones); the loop does not change.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from podium.protocol.names import validate_module

if TYPE_CHECKING:
    from podium.agent.config import AgentConfig
    from podium.agent.filecache import FileCache
    from podium.agent.spool import Spool, TransactionRecord
    from podium.protocol.messages import Message

# (succeeded, results): what a spooled action ends with.
Outcome = tuple[bool, dict[str, Any]]
Request = TypeVar("Request")


class StopSignal:
    """A request to stop one unfinished transaction: set once (the first reason is
    kept), watched by the action that runs it."""

    def __init__(self, module: str, action: str) -> None:
        self.module = module
        self.action = action
        self.reason: str | None = None
        self._set = asyncio.Event()

    @property
    def requested(self) -> bool:
        return self._set.is_set()

    def request(self, reason: str | None = None) -> None:
        if not self._set.is_set():
            self.reason = reason
            self._set.set()

    async def wait(self) -> None:
        """Until the transaction is to stop."""
        await self._set.wait()


class AgentState(Protocol):
    """What an action may use of the agent that runs it."""

    config: AgentConfig
    spool: Spool
    cache: FileCache

    def accepting(self, txid: str) -> bool:
        """Whether a request with this id is being recorded in the spool right now."""
        ...

    async def recorded(self, txid: str) -> None:
        """Until a request with this id that is being recorded is recorded or refused."""
        ...

    def stop_signal(self, txid: str) -> StopSignal | None:
        """The stop signal of a spooled transaction the agent has in hand (queued,
        running or followed); None once it has ended, or if it is not this agent's."""
        ...

    def report(self, record: TransactionRecord, message: Message) -> bool:
        """Send ``message`` about ``record`` to the controller that asked for it, best
        effort (never spooled): False if it was dropped."""
        ...


class Action(ABC):
    """A PXP ``module``/``action`` pair the agent offers."""

    module: ClassVar[str]
    action: ClassVar[str]

    @property
    def name(self) -> str:
        return f"{self.module}/{self.action}"


class ImmediateAction(Action):
    """Answered at once, without the spool: the loop sends the results as a blocking
    response, or an ``rpc_error_message`` if :meth:`answer` raises a PodiumError."""

    @abstractmethod
    async def answer(self, agent: AgentState, params: dict[str, Any]) -> dict[str, Any]:
        """The results; :class:`~podium.errors.ProtocolError` if ``params`` are wrong."""


class SpooledAction(Action, Generic[Request]):
    """Recorded in the spool, run in the agent's pool, its result sent until acknowledged."""

    @abstractmethod
    def parse(self, params: dict[str, Any]) -> Request:
        """The request checked and ready to run (pure; runs in a worker thread);
        :class:`~podium.errors.ProtocolError` says why it cannot be run."""

    def stored(self, params: dict[str, Any]) -> dict[str, Any]:
        """What of the request's params may be written to the spool."""
        return params

    @abstractmethod
    async def run(self, agent: AgentState, record: TransactionRecord, request: Request) -> Outcome:
        """Run the request recorded as ``record``; expected failures are an outcome."""

    @abstractmethod
    async def resume(self, agent: AgentState, record: TransactionRecord) -> Outcome:
        """The outcome of a transaction an earlier agent process accepted and did not
        finish: follow what still runs, and close what can no longer be known."""

    def stopped(self, record: TransactionRecord, reason: str | None) -> Outcome:
        """The outcome of a transaction stopped before it started."""
        why = reason or "on request"
        return False, {
            "_error": {
                "kind": "podium.agent/stopped",
                "msg": f"{self.name} was stopped before it started: {why}",
                "details": {},
            }
        }


class Registry:
    """The actions an agent offers, by (module, action)."""

    def __init__(self, actions: Iterable[Action] = ()) -> None:
        self._actions: dict[tuple[str, str], Action] = {}
        for action in actions:
            self.register(action)

    def register(self, action: Action) -> None:
        """Offer ``action``; a pair is offered by one action only."""
        key = (validate_module(action.module), validate_module(action.action, "action"))
        if key in self._actions:
            raise ValueError(f"{action.name} is already registered")
        self._actions[key] = action

    def get(self, module: str, action: str) -> Action | None:
        return self._actions.get((module, action))

    def names(self) -> list[str]:
        """``module/action`` of every action offered, sorted."""
        return sorted(a.name for a in self._actions.values())

    def unknown(self, module: str, action: str) -> str:
        """Why a request for an action not offered is refused."""
        return f"unknown action {module}/{action}; this agent offers {', '.join(self.names())}"


def default_registry() -> Registry:
    """The actions every agent offers."""
    from podium.agent.actions.puppet import (
        PuppetDisable,
        PuppetEnable,
        PuppetResource,
        PuppetRun,
        PuppetStatus,
        PuppetStop,
    )
    from podium.agent.actions.status import StatusQuery
    from podium.agent.actions.task import TaskRun, TaskStop

    puppet_run = PuppetRun()
    return Registry(
        [
            StatusQuery(),
            TaskRun(),
            TaskStop(),
            puppet_run,
            PuppetStop(),
            PuppetStatus(puppet_run),
            PuppetEnable(puppet_run),
            PuppetDisable(puppet_run),
            PuppetResource(),
        ]
    )
