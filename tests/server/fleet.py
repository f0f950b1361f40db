"""In-process agents for server tests: real broker routing and job engine, no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from podium.broker.server import Broker, LocalSession
from podium.protocol import messages as msg
from podium.protocol.envelope import Envelope

Behaviour = Callable[[msg.NonBlockingRequest], dict[str, Any] | None]


def echo(request: msg.NonBlockingRequest) -> dict[str, Any]:
    return {"_output": f"{request.params['input'].get('message', '')}\n"}


def hold(request: msg.NonBlockingRequest) -> None:
    """Accept the request and keep running until the test calls :meth:`FakeAgent.complete`."""
    return None


def fail(request: msg.NonBlockingRequest) -> dict[str, Any]:
    return {"_error": {"kind": "puppetlabs.tasks/task-error", "msg": "boom", "details": {}}}


class FakeAgent:
    """Answers task requests like an agent would; ``behaviour`` gives the results
    (None: accept and stay running)."""

    def __init__(
        self,
        broker: Broker | None,
        certname: str,
        behaviour: Behaviour = echo,
        *,
        answers: bool = True,  # False: never even accepts a request
    ) -> None:
        assert broker is not None, "fake agents need the server's embedded broker"
        self.broker = broker
        self.certname = certname
        self.behaviour = behaviour
        self.answers = answers
        self.requests: list[msg.NonBlockingRequest] = []
        self.blocking: list[msg.BlockingRequest] = []  # e.g. task/stop of a forced stop
        self.acks: list[str] = []
        self.controller = "pcp://*/server"  # who sent the last request
        self.session: LocalSession | None = None
        self.connect()

    @property
    def uri(self) -> str:
        return f"pcp://{self.certname}/agent"

    def connect(self) -> None:
        self.session = self.broker.attach(self.certname, "agent", self._deliver)

    def disconnect(self) -> None:
        assert self.session is not None
        self.session.close()
        self.session = None

    def send(self, message: msg.Message, target: str) -> None:
        assert self.session is not None
        self.session.send(msg.encode(message, sender=self.uri, target=target))

    def _deliver(self, env: Envelope) -> None:
        message = msg.decode(env)
        if isinstance(message, msg.ResultAck):
            self.acks.append(message.transaction_id)
        elif isinstance(message, msg.BlockingRequest):
            self.blocking.append(message)
        elif isinstance(message, msg.NonBlockingRequest):
            self.requests.append(message)
            self.controller = env.sender
            # Answer on the next loop turn, as a real agent answers from its own socket.
            asyncio.get_running_loop().call_soon(self._answer, env, message)

    def _answer(self, env: Envelope, request: msg.NonBlockingRequest) -> None:
        if self.session is None or not self.answers:
            return
        self.send(msg.ProvisionalResponse(transaction_id=request.transaction_id), env.sender)
        results = self.behaviour(request)
        if results is not None:
            self.finish(request.transaction_id, results, env.sender)

    def finish(self, txid: str, results: dict[str, Any], target: str) -> None:
        self.send(msg.NonBlockingResponse(transaction_id=txid, results=results), target)

    def complete(self, results: dict[str, Any] | None = None) -> None:
        """Send the result of the last request (``{"_output": "done"}`` by default)."""
        request = self.requests[-1]
        self.finish(request.transaction_id, results or {"_output": "done"}, self.controller)
