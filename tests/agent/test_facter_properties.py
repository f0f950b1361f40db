"""Properties of the fact parsers over generated input (hypothesis): whatever a file,
a command or the kernel says, a parse returns a value or its own error, never a crash,
and what is sent is plain JSON."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podium.agent.facter import external, network, parse

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
RECORDED = Path(__file__).parent / "facter_inputs" / "netlink" / "this-machine"
LINKS = (RECORDED / "links.bin").read_bytes()
ADDRESSES = (RECORDED / "addrs.bin").read_bytes()
lines = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.builds(lambda k, v: f"{k}={v}", st.text(max_size=10), st.text(max_size=10)),
        st.builds(lambda k, v: f"{k}\t: {v}", st.text(max_size=10), st.text(max_size=10)),
        st.builds(
            lambda k, n: f"{k}: {n} kB",
            st.sampled_from(["MemTotal", "MemAvailable", "SwapTotal", "SwapFree", "cpu MHz"]),
            st.integers(0, 10**30),
        ),
    ),
    max_size=20,
).map("\n".join)


@SETTINGS
@given(st.binary(max_size=600), st.binary(max_size=600))
def test_any_bytes_decode_to_records_without_a_crash(links, addresses):
    records = network.decode_netlink(links, addresses)
    network.networking(records)


@SETTINGS
@given(st.integers(0, len(LINKS) - 1), st.integers(0, 255), st.integers(0, len(ADDRESSES) - 1))
def test_a_corrupted_dump_decodes_without_a_crash(at, byte, address_at):
    links = LINKS[:at] + bytes([byte]) + LINKS[at + 1 :]
    addresses = ADDRESSES[:address_at] + bytes([byte]) + ADDRESSES[address_at + 1 :]
    network.networking(network.decode_netlink(links, addresses))


@SETTINGS
@given(lines)
def test_text_files_parse_without_a_crash(text):
    parse.os_fact(parse.os_release(text), machine="x86_64", debian_version=text)
    parse.memory(text)
    parse.processors(text, machine="x86_64")
    parse.mounts(text)
    parse.filesystems(text)
    parse.redhat_release(text)
    network.default_route_interface(text)
    network.hostnames(text.split("\n")[0], resolv_conf=text)


@SETTINGS
@given(lines)
def test_executable_output_parses_to_a_mapping(text):
    found = external.parse_output(text)
    assert isinstance(found, dict)
    json.dumps(external.facts_from(found), allow_nan=False)


values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=10),
        st.binary(max_size=10),
        st.dates(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.frozensets(st.integers(), max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=5), st.integers(), st.none()), children, max_size=4
        ),
    ),
    max_leaves=20,
)


@SETTINGS
@given(values)
def test_any_parsed_value_becomes_plain_json(value):
    plain = external.jsonable(value)
    assert json.loads(json.dumps(plain, allow_nan=False)) == plain
