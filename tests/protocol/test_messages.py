import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.errors import ProtocolError
from podium.protocol import messages as msg
from podium.protocol.envelope import Envelope, parse, serialize

SENDER, TARGET = "pcp://podium-server/server", "pcp://web-01/agent"


def envelope(message_type: str, data: object) -> Envelope:
    return Envelope(id="m1", message_type=message_type, sender=SENDER, target=TARGET, data=data)


def test_a_request_round_trips_through_the_wire_format():
    request = msg.NonBlockingRequest(
        transaction_id="tx-1", module="task", action="run", params={"task": "podium::echo"}
    )
    env = msg.encode(request, sender=SENDER, target=TARGET)
    assert msg.decode(parse(serialize(env))) == request


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"transaction_id": "t", "module": "task", "action": "run"}, "missing field 'params'"),
        (
            {"transaction_id": "t", "module": "task", "action": "run", "params": [], "x": 1},
            "unknown field",
        ),
        (
            {"transaction_id": "t", "module": "task", "action": "run", "params": []},
            "must be an object",
        ),
        (
            {"transaction_id": "../../etc", "module": "task", "action": "run", "params": {}},
            "transaction_id",
        ),
        (
            {"transaction_id": "t", "module": "Task/..", "action": "run", "params": {}},
            "invalid module",
        ),
        (
            {"transaction_id": "t", "module": "task", "action": "run x", "params": {}},
            "invalid action",
        ),
        (
            {
                "transaction_id": "t",
                "module": "task",
                "action": "run",
                "params": {},
                "notify_outcome": "yes",
            },
            "true or false",
        ),
    ],
)
def test_invalid_requests_are_rejected_with_the_reason(data, error):
    with pytest.raises(ProtocolError, match=error):
        msg.decode(envelope("rpc_non_blocking_request", data))


def test_unknown_message_types_are_rejected():
    with pytest.raises(ProtocolError, match="unknown message_type 'rpc_teleport'"):
        msg.decode(envelope("rpc_teleport", {}))


def test_data_must_be_an_object():
    with pytest.raises(ProtocolError, match="data must be a JSON object"):
        msg.decode(envelope("rpc_result_ack", "tx-1"))


@given(
    st.sampled_from(sorted(msg.MESSAGE_TYPES)),
    st.dictionaries(
        st.sampled_from(
            [
                "transaction_id",
                "module",
                "action",
                "params",
                "results",
                "description",
                "query",
                "uris",
                "changes",
                "facts",
                "subscribe",
                "notify_outcome",
                "id",
                "zzz",
            ]
        ),
        st.one_of(
            st.text(max_size=20),
            st.booleans(),
            st.none(),
            st.integers(),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
            st.lists(st.text(max_size=5), max_size=2),
        ),
    ),
)
def test_decode_accepts_or_rejects_any_data_with_a_protocol_error(message_type, data):
    try:
        message = msg.decode(envelope(message_type, data))
    except ProtocolError:
        return
    assert message.message_type == message_type
    assert msg.to_data(message).keys() >= data.keys()
