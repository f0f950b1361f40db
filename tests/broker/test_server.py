"""The broker over real TLS WebSocket connections on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from identities import Identities
from podium.broker.routing import Router
from podium.broker.server import Broker
from podium.pki.tls import client_context, server_context
from podium.protocol import messages as msg
from podium.protocol.envelope import parse, serialize
from waiting import DEADLINE, until

SERVER = "podium-server"


@pytest.fixture
def ids(tmp_path: Path) -> Identities:
    return Identities(tmp_path)


@pytest.fixture
async def broker(ids: Identities) -> AsyncIterator[Broker]:
    cert, key = ids.files("broker", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    broker = Broker(
        Router(controllers={SERVER}, max_message_bytes=64 * 1024),
        ssl_context=server_context(
            cert=cert, key=key, ca=ids.ca.ca_cert_path, require_client_cert=True
        ),
        port=0,
        crl_path=ids.ca.crl_path,
        crl_poll_interval=0.05,
    )
    await broker.start()
    yield broker
    await broker.stop()


def url(broker: Broker, client_type: str) -> str:
    return f"wss://127.0.0.1:{broker.port}/pcp/v2/{client_type}"


async def client(broker: Broker, ids: Identities, certname: str, client_type: str = "agent"):
    return await connect(url(broker, client_type), ssl=ids.context(certname), compression=None)


async def receive(ws: ClientConnection) -> msg.Message:
    return msg.decode(parse(await asyncio.wait_for(ws.recv(), DEADLINE)))


async def still_served(ws: ClientConnection) -> None:
    """The broker answers this connection: a message to an absent controller bounces."""
    probe = msg.encode(
        msg.ProvisionalResponse(transaction_id="probe"),
        sender="pcp://web-01/agent",
        target="pcp://podium-server/server",
    )
    await ws.send(serialize(probe))
    assert await receive(ws) == msg.Error(
        description="pcp://podium-server/server is not connected", id=probe.id
    )


async def wait_connected(broker: Broker, *uris: str) -> None:
    await until(lambda: all(broker.router.get(u) for u in uris), what=f"{uris} to connect")


async def test_a_request_travels_from_controller_to_agent_and_back(broker, ids):
    async with (
        await client(broker, ids, SERVER, "server") as server,
        await client(broker, ids, "web-01") as agent,
    ):
        await wait_connected(broker, "pcp://web-01/agent")
        request = msg.NonBlockingRequest(
            transaction_id="t1", module="task", action="run", params={}
        )
        await server.send(
            serialize(
                msg.encode(
                    request, sender="pcp://podium-server/server", target="pcp://web-01/agent"
                )
            )
        )
        assert await receive(agent) == request
        answer = msg.ProvisionalResponse(transaction_id="t1")
        await agent.send(
            serialize(
                msg.encode(answer, sender="pcp://web-01/agent", target="pcp://podium-server/server")
            )
        )
        assert await receive(server) == answer


async def test_a_client_without_a_certificate_is_refused(broker, ids):
    with pytest.raises((InvalidMessage, ssl.SSLError, ConnectionError)):
        async with await connect(url(broker, "agent"), ssl=ids.context(None)) as ws:
            await ws.recv()


async def test_a_certificate_from_another_ca_is_refused(broker, ids, tmp_path):
    other = Identities(tmp_path / "other")
    cert, key = other.files("web-01")
    context = client_context(ca=ids.ca.ca_cert_path, cert=cert, key=key)
    with pytest.raises((InvalidMessage, ssl.SSLError, ConnectionError)):
        async with await connect(url(broker, "agent"), ssl=context) as ws:
            await ws.recv()


async def test_an_agent_may_not_send_as_another_certname(broker, ids):
    async with await client(broker, ids, "web-01") as agent:
        fake = msg.ProvisionalResponse(transaction_id="t1")
        await agent.send(
            serialize(
                msg.encode(fake, sender="pcp://web-02/agent", target="pcp://podium-server/server")
            )
        )
        error = await receive(agent)
        assert isinstance(error, msg.Error)
        assert "may only send as its own certname" in error.description


async def test_garbage_and_oversized_messages_get_errors_and_the_connection_lives_on(broker, ids):
    async with await client(broker, ids, "web-01") as agent:
        await agent.send("{not json")
        assert "not valid JSON" in (await receive(agent)).description
        big = {
            "id": "m1",
            "message_type": "facts_update",
            "sender": "pcp://web-01/agent",
            "target": "pcp://*/server",
            "data": {"facts": {"x": "y" * 100_000}},
        }
        await agent.send(orjson.dumps(big).decode())
        error = await receive(agent)
        assert "exceeds the limit of 65536 bytes" in error.description
        assert error.id is None
        await still_served(agent)


async def test_a_revoked_certificate_is_dropped_at_once_and_refused_after(broker, ids):
    async with await client(broker, ids, "web-01") as agent, await client(broker, ids, "web-02"):
        await wait_connected(broker, "pcp://web-01/agent", "pcp://web-02/agent")
        await asyncio.to_thread(ids.ca.revoke, "web-01")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(agent.recv(), DEADLINE)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with pytest.raises(InvalidStatus) as refused:
        await client(broker, ids, "web-01")
    assert refused.value.response.status_code == 403
    assert broker.router.get("pcp://web-01/agent") is None


async def test_a_second_connection_replaces_the_first(broker, ids):
    first = await client(broker, ids, "web-01")
    await wait_connected(broker, "pcp://web-01/agent")
    async with await client(broker, ids, "web-01") as second:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(first.recv(), DEADLINE)
        # Until the broker is done with the first connection (its handler has removed
        # it from the router): only the second one is left open on the server.
        await until(lambda: len(broker._server.all_connections) == 1, what="the cleanup")
        session = broker.router.get("pcp://web-01/agent")
        assert session is not None and session.transport is not None
        await still_served(second)


async def test_an_unknown_path_is_refused_with_404(broker, ids):
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"wss://127.0.0.1:{broker.port}/elsewhere", ssl=ids.context("web-01"))
    assert refused.value.response.status_code == 404


async def test_an_agent_may_only_connect_as_an_agent(broker, ids):
    with pytest.raises(InvalidStatus) as refused:
        await client(broker, ids, "web-01", "server")
    assert refused.value.response.status_code == 403
