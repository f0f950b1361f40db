"""The ``networking`` fact from ``ip -j addr`` records, and the netlink decoder that
makes those records, on dumps recorded from this machine."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from podium.agent.facter import network

INPUTS = Path(__file__).parent / "facter_inputs"


def read_json(path: Path) -> object:
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    "case",
    sorted((INPUTS / "networking").iterdir()),
    ids=lambda case: case.name,
)
def test_the_networking_fact_is_built_from_interfaces_routes_and_names(case):
    value = network.networking(
        read_json(case / "ip-addr.json"),  # type: ignore[arg-type]
        route=(case / "route").read_text(),
        names=read_json(case / "names.json"),  # type: ignore[arg-type]
        sysfs=read_json(case / "sysfs.json"),  # type: ignore[arg-type]
    )
    assert value == read_json(case / "expected.json")


def test_netlink_dumps_decode_to_what_ip_j_addr_says():
    case = INPUTS / "netlink" / "this-machine"
    decoded = network.decode_netlink(
        (case / "links.bin").read_bytes(), (case / "addrs.bin").read_bytes()
    )
    link_keys = ("ifindex", "ifname", "mtu", "operstate", "address")
    address_keys = ("family", "local", "prefixlen", "scope", "label", "nodad", "dynamic")

    def essentials(records: list[dict]) -> list[dict]:
        return [
            {
                **{key: record[key] for key in link_keys if key in record},
                "addr_info": [
                    {key: info[key] for key in address_keys if key in info}
                    for info in record["addr_info"]
                ],
            }
            for record in records
        ]

    recorded = read_json(case / "ip-addr.json")
    assert essentials(decoded) == essentials(recorded)  # type: ignore[arg-type]
    assert [record["ifname"] for record in decoded] == ["lo", "ifb0", "ifb1", "eth0"]


def _attribute(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(kind: int, body: bytes) -> bytes:
    return network.NLMSG_HEADER.pack(16 + len(body), kind, 2, 1, 0) + body


def test_a_bond_member_reports_its_permanent_address_and_its_master():
    def link(index: int, name: str, mac: bytes, perm: bytes, master: int) -> bytes:
        attrs = _attribute(3, name.encode() + b"\0") + _attribute(1, mac)
        attrs += _attribute(54, perm) + _attribute(4, struct.pack("=I", 1500))
        if master:
            attrs += _attribute(10, struct.pack("=I", master))
        return _message(16, struct.pack("=BxHiII", 0, 1, index, 0, 0) + attrs)

    bond = bytes.fromhex("3cecef102030")
    links = link(2, "eno2", bond, bytes.fromhex("3cecef102031"), 4) + link(
        4, "bond0", bond, bond, 0
    )
    links += _message(3, struct.pack("=i", 0))
    records = network.decode_netlink(links, b"")
    assert records[0]["master"] == "bond0"
    assert records[0]["permaddr"] == "3c:ec:ef:10:20:31"
    assert "permaddr" not in records[1]
    interfaces = network.networking(records)["interfaces"]
    assert interfaces["eno2"]["mac"] == "3c:ec:ef:10:20:31"
    assert interfaces["bond0"]["mac"] == "3c:ec:ef:10:20:30"


def test_a_truncated_dump_yields_what_was_whole():
    case = INPUTS / "netlink" / "this-machine"
    links = (case / "links.bin").read_bytes()
    assert network.dump_done(links[-20:])  # the dump ends with NLMSG_DONE, 20 bytes
    assert network.decode_netlink(links[: -20 - 7], b"")[-1]["ifname"] == "ifb1"
    assert network.decode_netlink(b"\x01\x02", b"\xff" * 3) == []


def test_the_end_of_a_dump_is_recognised():
    done = network.NLMSG_HEADER.pack(20, 3, 2, 1, 0) + b"\0\0\0\0"
    assert network.dump_done(done)
    assert not network.dump_done(_message(16, b"\0" * 16))


def test_bindings_give_netmask_network_and_scope():
    assert network.binding("10.20.1.15", 22) == {
        "address": "10.20.1.15",
        "netmask": "255.255.252.0",
        "network": "10.20.0.0",
    }
    assert network.binding("2001:db8::1", 48) == {
        "address": "2001:db8::1",
        "netmask": "ffff:ffff:ffff::",
        "network": "2001:db8::",
        "scope6": "global",
    }
    assert network.scope6("fe80::1") == "link"
    assert network.scope6("fec0::1") == "site"
    assert network.scope6("::1") == "host"
    assert network.scope6("::10.0.0.1") == "compat,global"


def test_loopback_link_local_and_unique_local_addresses_are_passed_over():
    for address in ("127.0.0.1", "169.254.1.1", "::1", "fe80::1", "fd00::2", ""):
        assert network.ignored(address)
    for address in ("10.0.0.1", "192.0.2.2", "2001:db8::1"):
        assert not network.ignored(address)


def test_without_a_default_route_the_primary_is_the_first_with_a_usable_address():
    case = INPUTS / "networking" / "multi-interface"
    value = network.networking(read_json(case / "ip-addr.json"))  # type: ignore[arg-type]
    assert value["primary"] == "bond0"
    assert value["ip"] == "10.20.0.15"
    assert "physical" not in value  # no sysfs, no physical


def test_a_default_route_names_the_primary_interface():
    route = (INPUTS / "networking" / "multi-interface" / "route").read_text()
    assert network.default_route_interface(route) == "bond0"
    assert network.default_route_interface("Iface\tDestination\n") is None


@pytest.mark.parametrize(
    ("hostname", "canonical", "resolv", "names"),
    [
        ("vm", "vm", "nameserver 10.0.0.53\n", {"fqdn": "vm", "hostname": "vm"}),
        (
            "web-01.example.com",
            None,
            None,
            {"domain": "example.com", "fqdn": "web-01.example.com", "hostname": "web-01"},
        ),
        (
            "web-01",
            "web-01.lab.example.com",
            None,
            {"domain": "lab.example.com", "fqdn": "web-01.lab.example.com", "hostname": "web-01"},
        ),
        (
            "web-01",
            None,
            "search corp.example.com example.com\n",
            {"domain": "corp.example.com", "fqdn": "web-01.corp.example.com", "hostname": "web-01"},
        ),
        (
            "web-01",
            "192.0.2.9",
            "domain example.net\nsearch other.example\n",
            {"domain": "example.net", "fqdn": "web-01.example.net", "hostname": "web-01"},
        ),
    ],
)
def test_host_names_are_worked_out_as_facter_does(hostname, canonical, resolv, names):
    found = network.hostnames(
        hostname, canonical=canonical, canonical_address="192.0.2.9", resolv_conf=resolv
    )
    assert found == names
