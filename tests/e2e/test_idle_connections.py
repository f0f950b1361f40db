"""Idle and slow sockets cost a real server little: it keeps answering, and closes them.

The server runs with a low cap on API connections and a short header timeout. More idle
sockets than the cap are opened to the API (TCP that never starts TLS, and TLS
connections that never send a request), and idle TCP sockets to the broker; a client
then asks for the server's status as any would, and the server must close every idle
socket on its own.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from podium.cli.fleet import Fleet
from waiting import wait_for

pytestmark = pytest.mark.e2e

CAP = 50
HEADER_TIMEOUT = 5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(
        tmp_path / "podium",
        server_args=[f"--http-max-connections={CAP}", f"--http-header-timeout={HEADER_TIMEOUT}"],
    )
    try:
        fleet.start_server()
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Sockets to close at the end, however the test ends."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def tcp(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end has closed ``sock`` (an EOF or a reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except OSError:
        return True


def test_the_api_answers_past_its_connection_cap_and_idle_sockets_are_closed(
    server: Fleet, sockets: list[socket.socket]
) -> None:
    trust = ssl.create_default_context(cafile=str(server.cacert))
    api = [tcp(server.api_port) for _ in range(2 * CAP)]
    sockets += api
    for _ in range(CAP // 2):  # TLS done, and then not a byte
        tls = trust.wrap_socket(tcp(server.api_port), server_hostname="127.0.0.1")
        api.append(tls)
        sockets.append(tls)
    broker = [tcp(server.broker_port) for _ in range(CAP)]
    sockets += broker

    response = httpx.get(f"{server.server_url}/status/v1/simple", verify=trust, timeout=30)
    assert response.json() == {"state": "running"}

    wait_for(
        f"the server to warn that it holds {CAP} API connections",
        lambda: f"limit of {CAP} connections" in server.server_log.read_text(),
    )
    wait_for(
        "the server to close the idle API sockets",
        lambda: all(closed_by_peer(s) for s in api),
    )
    wait_for(
        "the broker to close the sockets that never began a handshake",
        lambda: all(closed_by_peer(s) for s in broker),
    )
    assert server.server is not None
    assert server.server.poll() is None, server.tail(server.server_log)
    again = httpx.get(f"{server.server_url}/status/v1/simple", verify=trust, timeout=30)
    assert again.status_code == 200
