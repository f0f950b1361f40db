import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.errors import ProtocolError
from podium.protocol import envelope as pcp

GOOD = {
    "id": "0f9b8c1e-0000-4000-8000-000000000001",
    "message_type": "rpc_provisional_response",
    "sender": "pcp://web-01.example/agent",
    "target": "pcp://podium-server/server",
    "data": {"transaction_id": "abc"},
}


def raw(**changes: object) -> bytes:
    return orjson.dumps({**GOOD, **changes})


def test_a_valid_envelope_parses_and_serializes_back():
    env = pcp.parse(raw())
    assert env.sender == "pcp://web-01.example/agent"
    assert orjson.loads(pcp.serialize(env)) == GOOD


def test_unknown_envelope_fields_are_rejected_by_name():
    with pytest.raises(ProtocolError, match=r"unknown envelope field.*expires"):
        pcp.parse(raw(expires="2026-01-01T00:00:00Z"))


@pytest.mark.parametrize("field", ["id", "message_type", "sender", "target"])
def test_a_missing_required_field_is_named(field):
    obj = dict(GOOD)
    del obj[field]
    with pytest.raises(ProtocolError, match=field):
        pcp.parse(orjson.dumps(obj))


@pytest.mark.parametrize(
    "uri",
    ["http://x/agent", "pcp://UPPER/agent", "pcp://a/../b/agent", "pcp://a/", "pcp://a..b/agent"],
)
def test_malformed_uris_are_rejected(uri):
    with pytest.raises(ProtocolError, match="invalid PCP URI"):
        pcp.parse(raw(sender=uri))


def test_oversized_messages_are_rejected_before_parsing():
    with pytest.raises(ProtocolError, match="exceeds the limit of 100 bytes") as info:
        pcp.parse(raw(data={"x": "y" * 200}), max_bytes=100)
    assert info.value.kind == "podium.protocol/message-too-large"


def test_non_json_and_non_object_messages_are_rejected():
    with pytest.raises(ProtocolError, match="not valid JSON"):
        pcp.parse(b"{nope")
    with pytest.raises(ProtocolError, match="JSON object"):
        pcp.parse(b"[1, 2]")


def test_uris_split_into_certname_and_type():
    assert pcp.split_uri("pcp://web-01.example/agent") == ("web-01.example", "agent")
    assert pcp.split_uri("pcp:///server") == ("", "server")
    assert pcp.split_uri("pcp://*/agent") == ("*", "agent")


@given(st.binary(max_size=512))
def test_parse_never_fails_with_anything_but_a_protocol_error(data):
    with contextlib.suppress(ProtocolError):
        pcp.parse(data)


@given(
    st.dictionaries(
        st.sampled_from(["id", "message_type", "sender", "target", "in_reply_to", "data", "x"]),
        st.one_of(st.none(), st.text(max_size=40), st.integers(-(2**63), 2**63 - 1)),
    )
)
def test_parse_of_arbitrary_objects_either_validates_or_raises_protocol_error(obj):
    try:
        env = pcp.parse(orjson.dumps(obj))
    except ProtocolError:
        return
    assert pcp.split_uri(env.sender) and pcp.split_uri(env.target)


def test_integers_beyond_64_bits_are_a_protocol_error():
    with pytest.raises(ProtocolError):
        pcp.parse(b'{"id": 123456789012345678901234567890}')
