"""Running the server process: uvicorn with TLS, the app, the embedded broker."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from podium import loop
from podium.errors import ConfigError
from podium.server.app import create_app
from podium.server.limits import ConnectionLimits, raise_nofile_limit, watching_descriptors
from podium.server.peer import Listener, PeerCertProtocol
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings

log = logging.getLogger(__name__)

# Descriptors the process holds besides its connections: database, logs, the CRL, ...
_SPARE_DESCRIPTORS = 256


class ApiServer(uvicorn.Server):
    """uvicorn's server, listening with :class:`~podium.server.peer.Listener` so that
    connections are admitted and timed from their accept, TLS handshake included.

    uvicorn's own start-up binds with the event loop's TLS, whose handshakes neither
    count nor end within a timeout of ours; this start-up is uvicorn's for one host and
    port with that listener in its place (``config.ssl`` is required).
    """

    def __init__(self, config: uvicorn.Config, limits: ConnectionLimits) -> None:
        super().__init__(config)
        self.limits = limits
        self.listener: Listener | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one chosen, for port 0)."""
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is not None:
            raise ValueError("the API binds its own socket")
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config
        if not isinstance(config.ssl, ssl.SSLContext):
            raise ConfigError("the API serves HTTPS only: give it a certificate and key")
        running = asyncio.get_running_loop()

        def http() -> PeerCertProtocol:
            return PeerCertProtocol(
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=running,
            )

        listener = self.listener = Listener(http, config.ssl, self.limits)
        try:
            server = await running.create_server(
                listener, host=config.host, port=config.port, backlog=config.backlog
            )
        except OSError as exc:
            await self.lifespan.shutdown()
            raise ConfigError(
                f"the API cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"
            ) from exc
        listener.start()
        self.servers = [server]
        self._log_started_message(server.sockets)
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.listener is not None:
            self.listener.close()
        await super().shutdown(sockets)


def api_config(
    app: Callable[..., Any], settings: ServerSettings, *, ca_cert: str, log_level: str
) -> uvicorn.Config:
    """uvicorn's settings for the API."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.cert_path),
        ssl_keyfile=str(settings.key_path),
        ssl_ca_certs=ca_cert,
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        http=PeerCertProtocol,
        log_level=log_level,
        access_log=log_level == "debug",
        lifespan="on",
        timeout_keep_alive=5,  # an idle kept-alive connection is closed after this
        timeout_graceful_shutdown=5,
    )


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run until SIGINT/SIGTERM."""
    broker_connections = 0 if settings.brokers else settings.max_connections
    nofile = raise_nofile_limit(
        wanted=settings.http_max_connections + broker_connections + _SPARE_DESCRIPTORS
    )
    runtime = Runtime(settings)
    config = api_config(
        create_app(runtime),
        settings,
        ca_cert=str(runtime.ca.ca_cert_path),
        log_level=log_level,
    )
    server = ApiServer(
        config,
        ConnectionLimits(
            max_connections=settings.http_max_connections,
            header_timeout=settings.http_header_timeout,
        ),
    )
    loop.run(_serve(server, nofile))


async def _serve(server: ApiServer, nofile: int) -> None:
    async with watching_descriptors(nofile):
        await server.serve()
