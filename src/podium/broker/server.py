"""The broker's I/O: a TLS WebSocket server driving :class:`~podium.broker.routing.Router`.

Clients connect to ``wss://<host>:<port>/pcp/v2/<client type>`` with a certificate
signed by the Podium CA; the certificate's CN is the client's certname. In-process
clients (the server's job engine, when the broker is embedded) attach with
:meth:`Broker.attach` and exchange :class:`Envelope` objects without a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from podium.broker.admission import TokenBucket
from podium.broker.routing import Client, Delivery, Router
from podium.errors import NotPermitted, ProtocolError
from podium.pki.revocation import CrlWatcher
from podium.pki.tls import peer_identity
from podium.protocol.envelope import Envelope
from podium.protocol.names import validate_client_type

log = logging.getLogger(__name__)

PATH_PREFIX = "/pcp/v2/"

Deliver = Callable[[Envelope], None]


class LocalSession:
    """An in-process client of the broker."""

    def __init__(self, broker: Broker, client: Client) -> None:
        self._broker = broker
        self.client = client

    @property
    def uri(self) -> str:
        return self.client.uri

    def send(self, envelope: Envelope) -> None:
        self._broker.dispatch(self._broker.router.forward(self.client, envelope))

    def close(self) -> None:
        self._broker.dispatch(self._broker.router.remove(self.client))


class Broker:
    """Routes PCP messages between agents and controllers."""

    def __init__(
        self,
        router: Router,
        *,
        ssl_context: ssl.SSLContext,
        host: str = "127.0.0.1",
        port: int = 8142,
        crl_path: Path | None = None,
        # Timeouts
        # Seconds a connection has for its TLS handshake, then as long again for its
        # WebSocket handshake; one that takes longer is closed.
        open_timeout: float = 10.0,
        ping_interval: float | None = 60.0,
        ping_timeout: float | None = 30.0,
        crl_poll_interval: float = 1.0,
        # Limits
        handshakes_per_second: float = 1000.0,
        handshake_burst: int = 2000,
        max_write_buffer: int = 8 * 1024 * 1024,
        # Connections the kernel completes before the broker accepts them; past it, a
        # burst of connects (a fleet reconnecting, a flood of idle sockets) is dropped.
        backlog: int = 2048,
    ) -> None:
        self.router = router
        self._ssl = ssl_context
        self._host = host
        self._port = port
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._crl = CrlWatcher(crl_path) if crl_path is not None else None
        self._crl_poll_interval = crl_poll_interval
        self._revoked: frozenset[int] = frozenset()
        self._bucket = TokenBucket(handshakes_per_second, handshake_burst, now=time.monotonic())
        self._max_write_buffer = max_write_buffer
        self._backlog = backlog
        self._server: Server | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._opening: set[_LazyTls] = set()  # connections before their TLS handshake

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def start(self) -> None:
        self._refresh_crl()
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            # TLS is done by the connection, when the peer first speaks (see _LazyTls).
            create_connection=cast(
                "type[ServerConnection]",
                type(
                    "BrokerConnection",
                    (_LazyTls,),
                    {
                        "tls": self._ssl,
                        "open_timeout": self._open_timeout,
                        "opening": self._opening,
                    },
                ),
            ),
            process_request=self._admit_request,
            compression=None,  # deflate state would cost ~100 KB per connection
            # Until both handshakes are done a socket is not a client: it takes no place
            # of the router's max_clients.
            open_timeout=self._open_timeout,
            backlog=self._backlog,
            max_size=self.router.max_message_bytes * 4,
            max_queue=4,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            server_header=None,
        )
        if self._crl is not None:
            self._watcher = asyncio.create_task(self._watch_crl())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for connection in list(self._opening):
            connection.abort_opening()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def attach(self, certname: str, client_type: str, deliver: Deliver) -> LocalSession:
        """Connect an in-process client; ``deliver`` is called with each message for it."""
        client = Client(
            certname, client_type, controller=certname in self.router.controllers, transport=deliver
        )
        self._register(client)
        return LocalSession(self, client)

    # -- delivery ---------------------------------------------------------------------

    def dispatch(self, deliveries: Iterable[Delivery]) -> None:
        for d in deliveries:
            transport = d.client.transport
            if isinstance(transport, ServerConnection):
                buffered = transport.transport.get_write_buffer_size()
                if buffered > self._max_write_buffer:
                    log.warning("dropping slow client %s (%d bytes queued)", d.client.uri, buffered)
                    self._close(transport, 1013, "too slow to keep up")
                    continue
                broadcast((transport,), d.raw, text=True)
            else:
                try:
                    transport(d.envelope)
                except Exception:  # a local client's bug must not stop routing
                    log.exception("in-process client %s failed on a message", d.client.uri)

    def _register(self, client: Client) -> None:
        replaced, updates = self.router.admit(client)
        if replaced is not None and isinstance(replaced.transport, ServerConnection):
            self._close(replaced.transport, 1000, "replaced by a new session")
        self.dispatch(updates)

    def _close(self, connection: ServerConnection, code: int, reason: str) -> None:
        task = asyncio.ensure_future(connection.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- connections ------------------------------------------------------------------

    def _admit_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not request.path.startswith(PATH_PREFIX):
            return _reject(HTTPStatus.NOT_FOUND, f"connect to {PATH_PREFIX}<client type>\n")
        try:
            validate_client_type(request.path[len(PATH_PREFIX) :])
        except ProtocolError as exc:
            return _reject(HTTPStatus.BAD_REQUEST, exc.msg + "\n")
        ssl_object = connection.transport.get_extra_info("ssl_object")
        if ssl_object is None or not ssl_object.getpeercert():
            return _reject(HTTPStatus.UNAUTHORIZED, "a client certificate is required\n")
        certname, serial = peer_identity(ssl_object)
        if serial in self._revoked:
            return _reject(HTTPStatus.FORBIDDEN, "this certificate has been revoked\n")
        try:  # refused before the upgrade, so the client sees a 403, not a close
            self.router.check_client_type(certname, request.path[len(PATH_PREFIX) :])
        except NotPermitted as exc:
            return _reject(HTTPStatus.FORBIDDEN, exc.msg + "\n")
        wait = self._bucket.take(time.monotonic())
        if wait > 0:
            response = _reject(HTTPStatus.SERVICE_UNAVAILABLE, "broker busy, retry later\n")
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        certname, serial = peer_identity(connection.transport.get_extra_info("ssl_object"))
        client_type = connection.request.path[len(PATH_PREFIX) :]  # type: ignore[union-attr]
        client = Client(
            certname,
            client_type,
            controller=certname in self.router.controllers,
            transport=connection,
            serial=serial,
        )
        try:
            self._register(client)
        except NotPermitted as exc:
            await connection.close(1013, exc.msg[:120])
            return
        try:
            async for frame in connection:
                self.dispatch(self.router.receive(client, frame))
        except ConnectionClosed:
            pass
        finally:
            self.dispatch(self.router.remove(client))

    # -- revocation -------------------------------------------------------------------

    def _refresh_crl(self) -> bool:
        if self._crl is None:
            return False
        revoked = self._crl.refresh()
        if revoked is None:
            return False
        self._revoked = revoked
        return True

    async def _watch_crl(self) -> None:
        while True:
            await asyncio.sleep(self._crl_poll_interval)
            try:
                changed = self._refresh_crl()
            except Exception:
                log.exception("could not read the CRL; keeping the previous one")
                continue
            if changed:
                self.disconnect_revoked()

    def disconnect_revoked(self) -> None:
        for client in self.router.clients():
            if client.serial in self._revoked and isinstance(client.transport, ServerConnection):
                log.info("closing %s: its certificate was revoked", client.uri)
                self._close(client.transport, 1008, "certificate revoked")


class _LazyTls(ServerConnection):
    """A broker connection that becomes TLS, then WebSocket, once the peer speaks.

    A TLS layer costs ~50 KiB before its handshake; a socket that says nothing should
    cost next to nothing. Until its first bytes (the ClientHello) this is a bare TCP
    protocol, closed ``open_timeout`` after it was accepted unless its TLS handshake is
    done by then. Those bytes go to the TLS layer once start_tls has put it in place;
    after the handshake websockets has the connection, with the TLS transport, and its
    own ``open_timeout`` for the WebSocket handshake. What the peer sends before that
    hand-over is kept and replayed.
    """

    # Set on the subclass each broker makes.
    tls: ssl.SSLContext
    open_timeout: float
    opening: set[_LazyTls]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tcp: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._handshake: asyncio.Task[None] | None = None
        self._tls_layer: asyncio.BaseProtocol | None = None  # once start_tls took over
        self._raw: list[bytes] = []  # TCP bytes from before that
        self._early: list[bytes] = []  # plain bytes from before the hand-over
        self._eof = False
        self._lost = False
        self._open = False  # websockets has it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._tcp = cast(asyncio.Transport, transport)
        self.opening.add(self)
        self._deadline = self.loop.call_later(self.open_timeout, self.abort_opening)

    def abort_opening(self) -> None:
        if not self._open and self._tcp is not None:
            self._tcp.abort()

    def data_received(self, data: bytes) -> None:
        if self._open:
            super().data_received(data)
        elif self._tls_layer is not None:
            self._early.append(data)
        elif self._tcp is not None:
            first = not self._raw
            self._raw.append(data)
            if first:
                self._tcp.pause_reading()
                self._handshake = self.loop.create_task(self._start_tls(self._tcp))
                # Runs after the task's first step, which puts the TLS layer in place,
                # and before that layer starts reading (both scheduled by that step).
                self.loop.call_soon(self._feed_tls_layer)

    def _feed_tls_layer(self) -> None:
        if self._tcp is None or self._tcp.get_protocol() is self:
            return  # the handshake never started: the connection went first
        self._tls_layer = layer = self._tcp.get_protocol()
        raw, self._raw = self._raw, []
        for data in raw:
            feed_protocol(layer, data)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._open:
            return super().eof_received()
        if self._tls_layer is None:
            return False  # gone before its handshake: close
        self._eof = True
        return True  # replayed once websockets has the connection

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open:
            super().connection_lost(exc)
        else:
            self._lost = True
            self._forget()

    def _forget(self) -> None:
        self.opening.discard(self)
        if self._deadline is not None:
            self._deadline.cancel()

    async def _start_tls(self, tcp: asyncio.Transport) -> None:
        tls = None
        with contextlib.suppress(OSError):  # failed (SSLError), timed out or dropped
            tls = await self.loop.start_tls(
                tcp, self, self.tls, server_side=True, ssl_handshake_timeout=self.open_timeout
            )
        self._forget()
        if tls is None or tls.is_closing() or self._lost:
            tcp.abort()
            return
        self._open = True
        super().connection_made(tls)
        early, self._early = self._early, []
        for data in early:
            super().data_received(data)
        if self._eof:
            super().eof_received()
            tls.close()  # what the transport does when eof_received() returns None


def feed_protocol(protocol: Any, data: bytes) -> None:
    """Give ``data`` to ``protocol`` as its transport would (a TLS layer is buffered)."""
    if not hasattr(protocol, "get_buffer"):
        protocol.data_received(data)
        return
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def _reject(status: HTTPStatus, body: str) -> Response:
    headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
    return Response(status.value, status.phrase, headers, body.encode())
