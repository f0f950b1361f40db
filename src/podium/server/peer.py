"""Who is at the other end of an HTTPS connection: the client certificate's name.

The API listens with client certificates optional: operators come with a token, agents
with the certificate Podium's CA gave them. uvicorn does not hand the certificate to
the application, so this protocol puts the verified certificate's CN and serial in the
request's ``state`` (``scope["state"]``), once per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

from podium.errors import NotPermitted

CERT_NAME = "podium_client_cert"
CERT_SERIAL = "podium_client_serial"


class PeerCertProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, telling the app the TLS client's certificate."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        name, serial = _peer(transport)
        if name is not None:
            # A copy for this connection: the server's own state dict is shared.
            self.app_state = {**self.app_state, CERT_NAME: name, CERT_SERIAL: serial}


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
