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


class FakeAgent:
    """Answers task requests like an agent would; ``behaviour`` gives the results
    (None: accept and stay running)."""

    def __init__(self, broker: Broker, certname: str, behaviour: Behaviour = echo) -> None:
        self.broker = broker
        self.certname = certname
        self.behaviour = behaviour
        self.requests: list[msg.NonBlockingRequest] = []
        self.acks: list[str] = []
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
        elif isinstance(message, msg.NonBlockingRequest):
            self.requests.append(message)
            # Answer on the next loop turn, as a real agent answers from its own socket.
            asyncio.get_running_loop().call_soon(self._answer, env, message)

    def _answer(self, env: Envelope, request: msg.NonBlockingRequest) -> None:
        if self.session is None:
            return
        self.send(msg.ProvisionalResponse(transaction_id=request.transaction_id), env.sender)
        results = self.behaviour(request)
        if results is not None:
            self.finish(request.transaction_id, results, env.sender)

    def finish(self, txid: str, results: dict[str, Any], target: str) -> None:
        self.send(msg.NonBlockingResponse(transaction_id=txid, results=results), target)
