"""The API's connections: who is at the other end, and how long they may take.

The API listens with client certificates optional: operators come with a token, agents
with the certificate Podium's CA gave them. uvicorn does not hand the certificate to
the application, so :class:`PeerCertProtocol` puts the verified certificate's CN and
serial in the request's ``state`` (``scope["state"]``), once per connection.

Connections are counted and timed from their accept, TLS handshake included, by
:class:`Listener`: uvicorn's own listener leaves the handshake to the event loop, which
tells the HTTP protocol nothing of a connection until it has finished, so idle sockets
would cost descriptors and memory unseen. The listener admits a connection (or not, or
in place of another: :class:`~podium.server.limits.ConnectionTable` decides), does the
handshake itself (:meth:`asyncio.loop.start_tls`) and hands the connection to
:class:`PeerCertProtocol`, which reports each request head and each response to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any, cast

import h11
from fastapi import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from podium.broker.server import feed_protocol
from podium.errors import NotPermitted
from podium.server.limits import ConnectionLimits, ConnectionTable, Throttle

log = logging.getLogger(__name__)

CERT_NAME = "podium_client_cert"
CERT_SERIAL = "podium_client_serial"

# A peer that does not answer our TLS close_notify within this is dropped.
_TLS_SHUTDOWN_TIMEOUT = 5.0


class PeerCertProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, telling the app the TLS client's certificate and
    telling the :class:`Listener` that accepted the connection how far it has got."""

    accepted: _Connection | None = None  # set by the listener before connection_made

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        name, serial = _peer(transport)
        if name is not None:
            # A copy for this connection: the server's own state dict is shared.
            self.app_state = {**self.app_state, CERT_NAME: name, CERT_SERIAL: serial}

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._report()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        self._report()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.accepted is not None:
            self.accepted.closed()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The connection leaves this protocol for good (the API has no WebSocket routes,
        # so it is refused and closed): it no longer counts.
        if self.accepted is not None:
            self.accepted.closed()
        super().handle_websocket_upgrade(event)

    def _report(self) -> None:
        if self.accepted is None:
            return
        if self.conn.their_state is h11.IDLE:  # no request under way: the next head is due
            self.accepted.awaiting_head()
        else:
            self.accepted.head_received()


class Listener:
    """The API's TCP listener (a protocol factory for :meth:`asyncio.loop.create_server`):
    admits each connection within ``limits``, does its TLS handshake with ``ssl_context``,
    then hands it to a protocol made by ``protocol``."""

    def __init__(
        self,
        protocol: Callable[[], PeerCertProtocol],
        ssl_context: ssl.SSLContext,
        limits: ConnectionLimits,
    ) -> None:
        self._protocol = protocol
        self._ssl = ssl_context
        self.limits = limits
        self.table: ConnectionTable[_Connection] = ConnectionTable(
            limits.max_connections, header_timeout=limits.header_timeout
        )
        self._loop = asyncio.get_running_loop()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._full = Throttle(60.0)

    def __call__(self) -> _Connection:
        return _Connection(self)

    def start(self) -> None:
        """Start closing connections that wait too long for a request head."""
        self._sweeper = self._loop.create_task(self._sweep())

    def close(self) -> None:
        """Refuse new connections and drop those still in their TLS handshake (uvicorn
        shuts down the others)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in self.table.waiting_connections():
            if conn.http is None:
                conn.abort()

    async def _sweep(self) -> None:
        tick = min(1.0, self.limits.header_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            for conn in self.table.expired(self._loop.time()):
                conn.abort()

    def _admit(self, conn: _Connection) -> bool:
        if self._closed:
            return False
        admission = self.table.open(conn, self._loop.time())
        if admission.evicted is not None:
            admission.evicted.abort()
            self._warn_full("the connections that have waited longest for a request make room")
        if not admission.admitted:
            self._warn_full("new ones are closed at once: every connection is busy")
        return admission.admitted

    def _warn_full(self, what: str) -> None:
        if self._full.ready(self._loop.time()):
            log.warning(
                "the API holds its limit of %d connections (--http-max-connections); %s",
                self.limits.max_connections,
                what,
            )

    def _handshake(self, conn: _Connection, transport: asyncio.Transport) -> None:
        task = self._loop.create_task(self._start_tls(conn, transport))
        self._handshakes.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._handshakes.discard)

    async def _start_tls(self, conn: _Connection, transport: asyncio.Transport) -> None:
        handed_over = False
        try:
            tls = await self._loop.start_tls(
                transport,
                conn,
                self._ssl,
                server_side=True,
                ssl_handshake_timeout=self.limits.header_timeout,
                ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT,
            )
            # None, or closing: the connection went while the handshake finished.
            if tls is not None and not tls.is_closing() and not conn.lost:
                conn.hand_over(tls, self._protocol())
                handed_over = True
        except OSError:
            pass  # failed (SSLError), timed out or dropped: nothing to tell anyone
        finally:
            if not handed_over:
                conn.abort()
                self.table.close(conn)


class _Connection(asyncio.Protocol):
    """One accepted connection: its place in the listener's table, its TLS handshake,
    then the HTTP protocol it was handed to.

    Before the handshake it is the TCP transport's protocol, and the TLS layer is not
    made until the peer has sent its first bytes (the ClientHello): a TLS layer costs
    ~50 KiB before its handshake, a socket that says nothing should not. Those bytes are
    given to the layer once start_tls has put it in place. Until the hand-over it is
    also the TLS transport's protocol, keeping what the peer sends right after the
    handshake (asyncio's loop delivers it before start_tls returns).
    """

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self.transport: asyncio.Transport | None = None  # TCP, under the TLS
        self.http: PeerCertProtocol | None = None
        self.lost = False
        self._tls_layer: asyncio.BaseProtocol | None = None  # once start_tls took over
        self._raw: list[bytes] = []  # TCP bytes from before that
        self._early: list[bytes] = []  # plain bytes from before the hand-over
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        if not self._listener._admit(self):
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._tls_layer is not None:
            self._early.append(data)
            return
        assert self.transport is not None
        first = not self._raw
        self._raw.append(data)
        if first:
            self.transport.pause_reading()
            self._listener._handshake(self, self.transport)
            # Runs after the handshake task's first step, which puts the TLS layer in
            # place, and before that layer starts reading (both scheduled by that step).
            self._listener._loop.call_soon(self._feed_tls_layer)

    def _feed_tls_layer(self) -> None:
        if self.transport is None or self.transport.get_protocol() is self:
            return  # the handshake never started: the connection went first
        self._tls_layer = layer = self.transport.get_protocol()
        raw, self._raw = self._raw, []
        for data in raw:
            feed_protocol(layer, data)

    def eof_received(self) -> bool:
        if self._tls_layer is None:
            return False  # gone before its handshake: close
        self._eof = True
        return True  # left to the HTTP protocol, once it has the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._listener.table.close(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def hand_over(self, tls: asyncio.Transport, http: PeerCertProtocol) -> None:
        self.http = http
        http.accepted = self
        tls.set_protocol(http)
        http.connection_made(tls)
        early, self._early = self._early, []
        for data in early:
            http.data_received(data)
        if self._eof:
            http.eof_received()
            tls.close()  # what the transport does when eof_received() returns None

    # What the HTTP protocol reports.

    def head_received(self) -> None:
        self._listener.table.busy(self)

    def awaiting_head(self) -> None:
        self._listener.table.waiting(self, self._listener._loop.time())

    def closed(self) -> None:
        self._listener.table.close(self)


def _peer(transport: asyncio.BaseTransport) -> tuple[str | None, int | None]:
    """(CN, serial) of a client certificate that passed verification, else (None, None)."""
    cert: Any = transport.get_extra_info("peercert")
    if not cert:
        return None, None
    name = next(
        (value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"),
        None,
    )
    serial = None
    with contextlib.suppress(TypeError, ValueError):
        serial = int(cert.get("serialNumber", ""), 16)
    return name, serial


def require_node_certificate(request: Request) -> str:
    """The certname of a caller that shows an unrevoked certificate from Podium's CA."""
    state = request.scope.get("state") or {}
    name = state.get(CERT_NAME)
    if name is None:
        raise NotPermitted(
            "task files are served to agents only: connect with a certificate issued by "
            "this server's CA"
        )
    if request.app.state.runtime.is_revoked(state.get(CERT_SERIAL)):
        raise NotPermitted(f"the certificate of {name} has been revoked")
    return str(name)
