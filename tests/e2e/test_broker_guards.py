"""The broker's answers to a client that breaks the rules, over a raw connection.

The raw client presents a real agent's certificate (that agent is stopped first: a
second connection with its certname would replace the first).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from e2e.installation import NODES, SERVER_URI, Installation, echoed

pytestmark = pytest.mark.e2e

INTRUDER = "intruder.e2e"
INTRUDER_URI = f"pcp://{INTRUDER}/agent"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def intruder(fleet: Installation) -> ssl.SSLContext:
    """TLS with the certificate and key of a real, enrolled (and then stopped) agent."""
    fleet.add_agent(INTRUDER)
    fleet.stop_agent(INTRUDER)
    fleet.wait_disconnected(INTRUDER)
    ssl_dir = fleet.vardir(INTRUDER) / "ssl"
    context = ssl.create_default_context(cafile=fleet.fleet.cacert)
    context.load_cert_chain(
        ssl_dir / "certs" / f"{INTRUDER}.pem", ssl_dir / "private_keys" / f"{INTRUDER}.pem"
    )
    return context


@asynccontextmanager
async def raw_agent(
    fleet: Installation, context: ssl.SSLContext
) -> AsyncIterator[ClientConnection]:
    url = f"{fleet.fleet.broker_url}/agent"
    async with connect(url, ssl=context, compression=None, open_timeout=10) as ws:
        yield ws


def envelope(message_type: str, *, sender: str, target: str, data: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "message_type": message_type,
        "sender": sender,
        "target": target,
        "data": data,
    }


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
    return message


async def test_agent_cannot_send_as_another_certname(
    fleet: Installation, intruder: ssl.SSLContext
) -> None:
    victim = NODES[4]
    before = fleet.inventory(victim)
    forged = envelope(
        "rpc_non_blocking_response",
        sender=f"pcp://{victim}/agent",
        target=SERVER_URI,
        data={"transaction_id": "forged", "results": {"_output": "forged\n"}},
    )

    async with raw_agent(fleet, intruder) as ws:
        await ws.send(json.dumps(forged))
        reply = await receive(ws)

    assert reply["message_type"] == "error"
    assert reply["sender"] == "pcp:///server"
    assert reply["target"] == INTRUDER_URI
    assert reply["data"]["id"] == forged["id"]
    assert "a client may only send as its own certname" in reply["data"]["description"]
    # The victim's session was neither replaced nor dropped, and it still runs tasks.
    assert fleet.inventory(victim) == before
    assert before["connected"]
    assert fleet.echo_results([victim]) == echoed([victim])


async def test_malformed_and_oversized_messages_are_answered_with_errors(
    fleet: Installation, intruder: ssl.SSLContext
) -> None:
    unknown_field = {
        **envelope("inventory_request", sender=INTRUDER_URI, target="pcp:///server", data={}),
        "priority": "high",
    }
    oversized = envelope(
        "inventory_request",
        sender=INTRUDER_URI,
        target="pcp:///server",
        data={"query": ["pcp://*/agent"], "padding": "x" * (3 * MIB // 2)},
    )
    cases = [
        ("this is not JSON", "message is not valid JSON"),
        (json.dumps(unknown_field), "unknown envelope field(s): priority"),
        (json.dumps(oversized), f"exceeds the limit of {MIB} bytes"),
    ]
    # An answer to an absent controller bounces: proof that the connection is served.
    probe = envelope(
        "rpc_provisional_response",
        sender=INTRUDER_URI,
        target="pcp://nobody.e2e/server",
        data={"transaction_id": "probe"},
    )

    async with raw_agent(fleet, intruder) as ws:
        for frame, description in cases:
            await ws.send(frame)
            reply = await receive(ws)
            assert reply["message_type"] == "error", frame[:80]
            assert description in reply["data"]["description"]
        # The same connection is still served.
        await ws.send(json.dumps(probe))
        reply = await receive(ws)

    assert reply["message_type"] == "error"
    assert reply["data"] == {
        "description": "pcp://nobody.e2e/server is not connected",
        "id": probe["id"],
    }
    assert fleet.echo_results(NODES[2:4]) == echoed(NODES[2:4])


async def test_frame_over_four_times_the_limit_closes_the_connection(
    fleet: Installation, intruder: ssl.SSLContext
) -> None:
    async with raw_agent(fleet, intruder) as ws:
        await ws.send("x" * (4 * MIB + 1))
        with pytest.raises(ConnectionClosedError) as closed:
            await receive(ws)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert fleet.echo_results(NODES[2:4]) == echoed(NODES[2:4])
