import orjson
import pytest

from podium.broker.routing import Client, Router
from podium.errors import NotPermitted
from podium.protocol import messages as msg
from podium.protocol.envelope import BROKER_URI, parse, serialize

SERVER = "podium-server"


def router(**kwargs) -> Router:
    return Router(controllers={SERVER}, **kwargs)


def connect(r: Router, certname: str, client_type: str = "agent") -> Client:
    client = Client(certname, client_type, controller=certname in r.controllers)
    r.admit(client)
    return client


def send(r: Router, client: Client, message: msg.Message, target: str, sender: str | None = None):
    env = msg.encode(message, sender=sender or client.uri, target=target)
    return r.receive(client, serialize(env))


def only_error(deliveries, to: Client) -> str:
    assert len(deliveries) == 1
    (d,) = deliveries
    assert d.client is to
    assert d.envelope.message_type == "error"
    return d.envelope.data["description"]


REQUEST = msg.NonBlockingRequest(transaction_id="tx1", module="task", action="run", params={})


def test_a_controller_request_reaches_the_agent_byte_for_byte():
    r = router()
    server, agent = connect(r, SERVER, "server"), connect(r, "web-01")
    env = msg.encode(REQUEST, sender=server.uri, target=agent.uri)
    raw = serialize(env)
    (delivery,) = r.receive(server, raw)
    assert delivery.client is agent
    assert delivery.raw == raw


def test_an_agent_answer_reaches_the_controller():
    r = router()
    server, agent = connect(r, SERVER, "server"), connect(r, "web-01")
    (d,) = send(r, agent, msg.ProvisionalResponse(transaction_id="tx1"), server.uri)
    assert d.client is server


def test_a_client_may_not_send_as_another_certname():
    r = router()
    server, agent = connect(r, SERVER, "server"), connect(r, "web-01")
    connect(r, "web-02")
    out = send(
        r,
        agent,
        msg.ProvisionalResponse(transaction_id="tx1"),
        server.uri,
        sender="pcp://web-02/agent",
    )
    assert "may only send as its own certname" in only_error(out, agent)


def test_agents_may_not_send_requests():
    r = router()
    agent, other = connect(r, "web-01"), connect(r, "web-02")
    out = send(r, agent, REQUEST, other.uri)
    assert "may only be sent by a controller" in only_error(out, agent)


def test_agents_cannot_talk_to_each_other():
    r = router()
    agent, other = connect(r, "web-01"), connect(r, "web-02")
    out = send(r, agent, msg.ProvisionalResponse(transaction_id="t"), other.uri)
    assert "is not connected" in only_error(out, agent)


def test_a_message_for_a_disconnected_node_bounces_with_its_id():
    r = router()
    server = connect(r, SERVER, "server")
    env = msg.encode(REQUEST, sender=server.uri, target="pcp://gone/agent")
    (d,) = r.receive(server, serialize(env))
    assert d.envelope.data == {"description": "pcp://gone/agent is not connected", "id": env.id}


def test_malformed_and_oversized_frames_are_answered_with_an_error():
    r = router(max_message_bytes=200)
    agent = connect(r, "web-01")
    assert "not valid JSON" in only_error(r.receive(agent, b"{garbage"), agent)
    big = orjson.dumps(
        {
            "id": "x",
            "message_type": "error",
            "sender": agent.uri,
            "target": BROKER_URI,
            "data": {"description": "y" * 300},
        }
    )
    assert "exceeds the limit of 200 bytes" in only_error(r.receive(agent, big), agent)


def test_wildcard_targets_reach_every_controller_and_no_agent():
    r = router()
    server = connect(r, SERVER, "server")
    agent = connect(r, "web-01")
    connect(r, "web-02")
    out = send(r, agent, msg.FactsUpdate(facts={"a": 1}), "pcp://*/server")
    assert [d.client for d in out] == [server]


def test_inventory_subscribers_hear_of_connections_and_disconnections():
    r = router()
    server = connect(r, SERVER, "server")
    (answer,) = send(
        r, server, msg.InventoryRequest(query=["pcp://*/agent"], subscribe=True), BROKER_URI
    )
    assert answer.envelope.data == {"uris": []}
    agent = Client("web-01", "agent", controller=False)
    _, updates = r.admit(agent)
    assert [u.envelope.data for u in updates] == [
        {"changes": [{"client": "pcp://web-01/agent", "change": "connected"}]}
    ]
    (gone,) = r.remove(agent)
    assert gone.envelope.data["changes"][0]["change"] == "disconnected"


def test_only_controllers_may_query_the_inventory_and_with_few_patterns():
    r = router()
    agent = connect(r, "web-01")
    out = send(r, agent, msg.InventoryRequest(query=["pcp://*/agent"], subscribe=True), BROKER_URI)
    assert "only controllers" in only_error(out, agent)
    server = connect(r, SERVER, "server")
    many = msg.InventoryRequest(query=[f"pcp://n{i}/agent" for i in range(17)])
    assert "the limit is 16" in only_error(send(r, server, many, BROKER_URI), server)


def test_only_controllers_choose_their_client_type():
    r = router()
    with pytest.raises(NotPermitted, match="may only connect as agent"):
        r.admit(Client("web-01", "server", controller=False))
    connect(r, SERVER, "server")


def test_a_replaced_session_is_announced_so_controllers_resend():
    r = router()
    server = connect(r, SERVER, "server")
    send(r, server, msg.InventoryRequest(query=["pcp://*/agent"], subscribe=True), BROKER_URI)
    connect(r, "web-01")
    replaced, updates = r.admit(Client("web-01", "agent", controller=False))
    assert replaced is not None
    assert [u.envelope.data["changes"] for u in updates] == [
        [{"client": "pcp://web-01/agent", "change": "connected"}]
    ]


def test_a_new_session_replaces_the_old_and_the_old_ones_close_does_not_remove_it():
    r = router()
    first = Client("web-01", "agent", controller=False)
    second = Client("web-01", "agent", controller=False)
    r.admit(first)
    replaced, updates = r.admit(second)
    assert replaced is first and updates == []
    assert r.remove(first) == []
    assert r.get("pcp://web-01/agent") is second


def test_the_broker_refuses_connections_beyond_its_limit():
    r = router(max_clients=1)
    connect(r, "web-01")
    with pytest.raises(NotPermitted, match="full"):
        r.admit(Client("web-02", "agent", controller=False))


def test_broker_answers_only_inventory_requests():
    r = router()
    agent = connect(r, "web-01")
    out = send(r, agent, msg.ProvisionalResponse(transaction_id="t"), BROKER_URI)
    assert "does not answer" in only_error(out, agent)
    assert parse(out[0].raw).target == agent.uri


def test_an_in_process_message_over_the_limit_is_refused():
    r = router(max_message_bytes=300)
    server = connect(r, SERVER, "server")
    connect(r, "web-01")
    big = msg.NonBlockingRequest(
        transaction_id="t", module="task", action="run", params={"x": "y" * 400}
    )
    out = r.forward(server, msg.encode(big, sender=server.uri, target="pcp://web-01/agent"))
    assert "exceeds the limit of 300 bytes" in only_error(out, server)
