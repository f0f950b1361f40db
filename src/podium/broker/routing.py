"""The broker's rules, without I/O: who is connected, who may send what to whom.

The adapter (:mod:`podium.broker.server`) hands every received frame to
:meth:`Router.receive` and sends the :class:`Delivery` list it returns. Frames are
forwarded as received (no re-encoding) once the envelope has been checked.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from podium.errors import NotPermitted, PodiumError, ProtocolError
from podium.protocol import envelope as pcp
from podium.protocol import messages as msg
from podium.protocol.envelope import BROKER_URI, Envelope

MAX_INVENTORY_PATTERNS = 16
AGENT_TYPE = "agent"


@dataclass(eq=False, slots=True)
class Client:
    """One live connection. ``session_id`` tells a replaced session from its successor."""

    certname: str
    client_type: str
    controller: bool
    transport: Any = None  # the adapter's handle: a websocket, or a local callback
    serial: int | None = None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    subscribed: bool = False

    @property
    def uri(self) -> str:
        return pcp.make_uri(self.certname, self.client_type)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Send ``raw`` (the encoded ``envelope``) to ``client``."""

    client: Client
    envelope: Envelope
    raw: bytes


class Router:
    """Connection table and routing decisions for one broker."""

    def __init__(
        self,
        *,
        controllers: Iterable[str],
        # Limits
        max_clients: int = 20_000,
        max_message_bytes: int = pcp.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.controllers = frozenset(controllers)
        self.max_clients = max_clients
        self.max_message_bytes = max_message_bytes
        self._clients: dict[str, Client] = {}
        self._by_type: dict[str, dict[str, Client]] = {}  # for pcp://*/<type> targets
        self._subscribers: dict[str, Client] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, uri: str) -> Client | None:
        return self._clients.get(uri)

    def clients(self) -> list[Client]:
        return list(self._clients.values())

    # -- connections -----------------------------------------------------------------

    def admit(self, client: Client) -> tuple[Client | None, list[Delivery]]:
        """Register ``client``; returns the session it replaces (to be closed) and
        the inventory updates to send. Raises :class:`NotPermitted` when full, or when
        a client that is not a controller asks for another type than ``agent``."""
        self.check_client_type(client.certname, client.client_type)
        replaced = self._clients.get(client.uri)
        if replaced is None and len(self._clients) >= self.max_clients:
            raise NotPermitted(
                f"the broker is full ({self.max_clients} connections); try another broker",
                kind="podium.broker/full",
            )
        self._clients[client.uri] = client
        self._by_type.setdefault(client.client_type, {})[client.uri] = client
        if replaced is not None:
            self._subscribers.pop(replaced.session_id, None)
        # Announced even when it replaces a session: what was sent to the old one may be
        # lost, and controllers re-send pending requests to a node that (re)connects.
        return replaced, self._announce(client.uri, "connected")

    def check_client_type(self, certname: str, client_type: str) -> None:
        """:class:`NotPermitted` unless ``certname`` may connect as ``client_type``:
        only controllers choose another type than ``agent``."""
        if client_type != AGENT_TYPE and certname not in self.controllers:
            raise NotPermitted(
                f"{certname} may only connect as {AGENT_TYPE}: "
                "only controllers choose other client types",
                kind="podium.broker/client-type",
            )

    def remove(self, client: Client) -> list[Delivery]:
        """Forget a closed connection, unless a newer session has taken its place."""
        self._subscribers.pop(client.session_id, None)
        if self._clients.get(client.uri) is not client:
            return []
        del self._clients[client.uri]
        same_type = self._by_type[client.client_type]
        del same_type[client.uri]
        if not same_type:
            del self._by_type[client.client_type]
        return self._announce(client.uri, "disconnected")

    def _announce(self, uri: str, change: str) -> list[Delivery]:
        if not self._subscribers:
            return []
        update = msg.InventoryUpdate(changes=[{"client": uri, "change": change}])
        return [self._from_broker(s, update) for s in self._subscribers.values()]

    # -- messages --------------------------------------------------------------------

    def receive(self, client: Client, raw: bytes | str) -> list[Delivery]:
        """Route one frame from ``client``; errors go back to it as ``error`` messages."""
        message_id: str | None = None
        try:
            envelope = pcp.parse(raw, max_bytes=self.max_message_bytes)
            message_id = envelope.id
            return self._route(client, envelope, raw if isinstance(raw, bytes) else raw.encode())
        except PodiumError as exc:
            return [self._from_broker(client, msg.Error(description=exc.msg, id=message_id))]

    def forward(self, client: Client, envelope: Envelope) -> list[Delivery]:
        """Route an envelope built in this process (an in-process controller's)."""
        try:
            return self._route(client, envelope, None)
        except PodiumError as exc:
            return [self._from_broker(client, msg.Error(description=exc.msg, id=envelope.id))]

    def _route(self, client: Client, envelope: Envelope, raw: bytes | None) -> list[Delivery]:
        if envelope.sender != client.uri:
            raise NotPermitted(
                f"sender {envelope.sender} does not match this connection's identity "
                f"{client.uri}: a client may only send as its own certname"
            )
        if envelope.message_type not in msg.MESSAGE_TYPES:
            raise ProtocolError(f"unknown message_type {envelope.message_type!r}")
        if envelope.target == BROKER_URI:
            return self._handle(client, envelope)
        if envelope.message_type in msg.CONTROLLER_ONLY and not client.controller:
            raise NotPermitted(
                f"{envelope.message_type} may only be sent by a controller; "
                f"{client.certname} is not one"
            )
        targets = self._targets(envelope.target)
        if not client.controller:
            # Agents answer controllers; they never talk to each other.
            targets = [t for t in targets if t.controller]
        if not targets:
            if "*" in envelope.target:
                return []
            raise PodiumError(
                f"{envelope.target} is not connected",
                kind="podium.broker/not-connected",
                details={"target": envelope.target},
            )
        data = raw if raw is not None else pcp.serialize(envelope)
        if len(data) > self.max_message_bytes:  # built in-process: not checked by parse()
            raise ProtocolError(
                f"message of {len(data)} bytes exceeds the limit of {self.max_message_bytes} bytes",
                kind="podium.protocol/message-too-large",
            )
        return [Delivery(t, envelope, data) for t in targets]

    def _targets(self, uri: str) -> list[Client]:
        certname, client_type = pcp.split_uri(uri)
        if certname == "*":
            return list(self._by_type.get(client_type, {}).values())
        found = self._clients.get(uri)
        return [found] if found is not None else []

    def _handle(self, client: Client, envelope: Envelope) -> list[Delivery]:
        request = msg.decode(envelope)
        if not isinstance(request, msg.InventoryRequest):
            raise ProtocolError(
                f"the broker does not answer {envelope.message_type}; "
                "send inventory_request to pcp:///server"
            )
        if not client.controller:
            raise NotPermitted("only controllers may query the broker's inventory")
        if len(request.query) > MAX_INVENTORY_PATTERNS:
            raise ProtocolError(
                f"inventory_request has {len(request.query)} patterns; "
                f"the limit is {MAX_INVENTORY_PATTERNS}"
            )
        if request.subscribe:
            self._subscribers[client.session_id] = client
        uris = self.inventory(request.query)
        return [self._from_broker(client, msg.InventoryResponse(uris=uris), envelope.id)]

    def inventory(self, patterns: Iterable[str] = ("pcp://*/*",)) -> list[str]:
        pats = list(patterns)
        return sorted(u for u in self._clients if any(fnmatch.fnmatchcase(u, p) for p in pats))

    def _from_broker(
        self, client: Client, message: msg.Message, in_reply_to: str | None = None
    ) -> Delivery:
        env = msg.encode(message, sender=BROKER_URI, target=client.uri, in_reply_to=in_reply_to)
        return Delivery(client, env, pcp.serialize(env))
