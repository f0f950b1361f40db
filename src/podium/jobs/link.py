"""The job engine's connection to the broker, as an interface with two transports.

:class:`LocalLink` talks to a broker in the same process; :class:`RemoteLink` connects
to standalone brokers over TLS WebSocket. Both keep the set of connected agents from
the broker's inventory updates and hand every other message to ``on_message``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import broadcast
from websockets.exceptions import ConnectionClosed, WebSocketException

from podium.broker.server import Broker, LocalSession
from podium.errors import ProtocolError
from podium.protocol import envelope as pcp
from podium.protocol import messages as msg
from podium.protocol.backoff import full_jitter
from podium.protocol.envelope import BROKER_URI, Envelope

log = logging.getLogger(__name__)

CONTROLLER_TYPE = "server"
AGENT_QUERY = "pcp://*/agent"

OnMessage = Callable[[Envelope], None]
OnChange = Callable[[str, bool], None]
OnLink = Callable[[bool], None]


class ControllerLink:
    """What the job engine needs from a broker connection."""

    def __init__(self, certname: str) -> None:
        self.uri = pcp.make_uri(certname, CONTROLLER_TYPE)
        self.connected: dict[str, datetime] = {}  # agent certname → connected since
        # The broker the connected agents are on (wss://host:port/pcp/v2), once attached.
        self.broker_url: str | None = None
        self.on_message: OnMessage = lambda env: None
        self.on_change: OnChange = lambda certname, up: None
        # The broker connection came up (its inventory known) or went down.
        self.on_link: OnLink = lambda up: None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def send(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` for the broker; False when there is no connection."""
        raise NotImplementedError

    def make(self, message: msg.Message, target: str, *, id: str | None = None) -> Envelope:
        return msg.encode(message, sender=self.uri, target=target, id=id)

    def _subscribe(self) -> None:
        self.send(self.make(msg.InventoryRequest(query=[AGENT_QUERY], subscribe=True), BROKER_URI))

    def _deliver(self, env: Envelope) -> None:
        if env.sender != BROKER_URI or env.message_type not in (
            "inventory_response",
            "inventory_update",
        ):
            self.on_message(env)
            return
        message = msg.decode(env)
        if isinstance(message, msg.InventoryResponse):
            now = {pcp.split_uri(u)[0] for u in message.uris}
            gone, came = self.connected.keys() - now, now - self.connected.keys()
            stamp = datetime.now(UTC)
            self.connected = {c: self.connected.get(c, stamp) for c in now}
            for certname in gone:
                self.on_change(certname, False)
            for certname in came:
                self.on_change(certname, True)
            self.ready.set()
            self.on_link(True)
        elif isinstance(message, msg.InventoryUpdate):
            for change in message.changes:
                certname, client_type = pcp.split_uri(change.get("client", ""))
                if client_type != "agent":
                    continue
                up = change.get("change") == "connected"
                if up:
                    self.connected[certname] = datetime.now(UTC)
                else:
                    self.connected.pop(certname, None)
                self.on_change(certname, up)

    def _lost(self) -> None:
        self.ready.clear()
        self.on_link(False)
        gone, self.connected = self.connected, {}
        for certname in gone:
            self.on_change(certname, False)


class LocalLink(ControllerLink):
    """The job engine attached to the broker in its own process."""

    def __init__(self, broker: Broker, certname: str) -> None:
        super().__init__(certname)
        self._broker = broker
        self._session: LocalSession | None = None

    async def start(self) -> None:
        self._session = self._broker.attach(
            pcp.split_uri(self.uri)[0], CONTROLLER_TYPE, self._deliver
        )
        self._subscribe()

    async def stop(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def send(self, envelope: Envelope) -> bool:
        if self._session is None:
            return False
        self._session.send(envelope)
        return True


class RemoteLink(ControllerLink):
    """The job engine connected to standalone brokers (the first that answers)."""

    def __init__(
        self,
        certname: str,
        urls: Sequence[str],
        *,
        ssl_context: ssl.SSLContext,
        max_message_bytes: int = pcp.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(certname)
        self._urls = list(urls)
        self._ssl = ssl_context
        self._max = max_message_bytes
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def send(self, envelope: Envelope) -> bool:
        if self._ws is None:
            return False
        broadcast((self._ws,), pcp.serialize(envelope), text=True)
        return True

    async def _run(self) -> None:
        attempt = 0
        while True:
            for url in self._urls:
                try:
                    async with connect(
                        url.rstrip("/") + "/" + CONTROLLER_TYPE,
                        ssl=self._ssl,
                        compression=None,
                        max_size=self._max * 4,
                    ) as ws:
                        self._ws = ws
                        self.broker_url = url
                        attempt = 0
                        log.info("connected to broker %s", url)
                        self._subscribe()
                        async for frame in ws:
                            try:
                                self._deliver(pcp.parse(frame, max_bytes=self._max * 4))
                            except ProtocolError as exc:
                                log.warning("ignoring an invalid message: %s", exc.msg)
                except (OSError, WebSocketException, TimeoutError) as exc:
                    if not isinstance(exc, ConnectionClosed):
                        log.warning("broker %s: %s", url, exc)
                finally:
                    self._ws = None
                    self.broker_url = None
                    self._lost()
            await asyncio.sleep(full_jitter(attempt, cap=16.0))
            attempt += 1
