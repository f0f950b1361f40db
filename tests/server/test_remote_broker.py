"""The job engine through a standalone broker, over a real TLS WebSocket connection."""

from __future__ import annotations

import asyncio
import dataclasses

from podium.broker.routing import Router
from podium.broker.server import Broker
from podium.pki.tls import server_context
from podium.server.runtime import Runtime, open_ca
from waiting import DEADLINE, until

from .conftest import api_client
from .fleet import FakeAgent


async def test_a_task_job_runs_through_a_standalone_broker(settings, tmp_path):
    ca = open_ca(settings)
    cert, key = ca.issue("broker-1", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    (tmp_path / "b.pem").write_bytes(cert)
    (tmp_path / "b.key").write_bytes(key)
    broker = Broker(
        Router(controllers={settings.certname}),
        ssl_context=server_context(
            cert=tmp_path / "b.pem",
            key=tmp_path / "b.key",
            ca=ca.ca_cert_path,
            require_client_cert=True,
        ),
        port=0,
    )
    await broker.start()
    runtime = Runtime(
        dataclasses.replace(settings, brokers=(f"wss://127.0.0.1:{broker.port}/pcp/v2",))
    )
    agents = [FakeAgent(broker, f"web-0{i}") for i in (1, 2)]
    await runtime.start()
    try:
        await until(lambda: len(runtime.link.connected) == 2, what="both agents")
        async with api_client(runtime) as api:
            body = {
                "task": "podium::echo",
                "params": {"message": "via broker"},
                "scope": {"nodes": ["web-01", "web-02"]},
            }
            job_id = int((await api.post("/command/task", json=body)).json()["job"]["name"])
            await asyncio.wait_for(runtime.jobs.wait(job_id), DEADLINE)
            job = (await api.get(f"/jobs/{job_id}")).json()
            assert job["node_states"] == {"finished": 2}
            # Each result is acknowledged once stored; the ack crosses the broker after.
            await until(lambda: all(a.acks for a in agents), what="the acks")
            assert all(len(a.acks) == 1 for a in agents)
            # The broker going away makes the nodes disconnected for the engine.
            await broker.stop()
            await until(lambda: not runtime.link.connected, what="the nodes to go")
            # Without a broker, a job is refused with the real reason, not failed nodes.
            refused = await api.post("/command/task", json=body)
            assert refused.status_code == 503
            assert "no connection to a broker" in refused.json()["msg"]
    finally:
        await runtime.stop()
        await broker.stop()
