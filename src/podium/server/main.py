"""Running the server process: uvicorn with TLS, the app, the embedded broker."""

from __future__ import annotations

import logging
import ssl

import uvicorn

from podium import loop
from podium.server.app import create_app
from podium.server.peer import PeerCertProtocol
from podium.server.runtime import Runtime
from podium.server.settings import ServerSettings

log = logging.getLogger(__name__)


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run until SIGINT/SIGTERM."""
    runtime = Runtime(settings)
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.cert_path),
        ssl_keyfile=str(settings.key_path),
        ssl_ca_certs=str(runtime.ca.ca_cert_path),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        http=PeerCertProtocol,
        log_level=log_level,
        access_log=log_level == "debug",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    loop.run(server.serve())
