"""The ``networking`` fact, and the netlink decoder that feeds it.

Interfaces are described by records shaped like the objects of ``ip -j addr``
(``ifname``, ``mtu``, ``operstate``, ``address``, ``addr_info: [{family, local,
prefixlen, label, ...}]``): :func:`decode_netlink` makes them from the kernel's own
answer to an ``RTM_GETLINK`` and an ``RTM_GETADDR`` dump (no command, no ctypes), and
``ip -j addr`` makes the same where netlink cannot be used. :func:`networking` then
builds Facter's fact from them, the default route and the host's names, as Facter's
Linux networking resolver does.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

# -- netlink (rtnetlink(7)) -----------------------------------------------------------

RTM_GETLINK = 18
RTM_GETADDR = 22
_RTM_NEWLINK = 16
_RTM_NEWADDR = 20
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
_RTATTR = struct.Struct("=HH")  # length, type
_U32 = struct.Struct("=I")

_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_MASTER = 1, 3, 4, 10
_IFLA_OPERSTATE, _IFLA_PERM_ADDRESS = 16, 54
_IFA_ADDRESS, _IFA_LOCAL, _IFA_LABEL, _IFA_FLAGS = 1, 2, 3, 8
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
# ifa_flags bits as ``ip -j`` names them (0x01 is "secondary" for IPv4).
_ADDRESS_FLAGS = (
    (0x02, "nodad"),
    (0x04, "optimistic"),
    (0x08, "dadfailed"),
    (0x10, "home"),
    (0x20, "deprecated"),
    (0x40, "tentative"),
    (0x100, "mngtmpaddr"),
    (0x200, "noprefixroute"),
    (0x400, "autojoin"),
    (0x800, "stable-privacy"),
)
_IFA_F_PERMANENT = 0x80


def dump_request(kind: int, *, sequence: int = 1) -> bytes:
    """The netlink message that asks the kernel for every link or every address."""
    body = _IFINFOMSG.pack(0, 0, 0, 0, 0) if kind == RTM_GETLINK else _IFADDRMSG.pack(0, 0, 0, 0, 0)
    flags = 0x1 | 0x300  # NLM_F_REQUEST | NLM_F_DUMP
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, flags, sequence, 0) + body


def dump_done(data: bytes) -> bool:
    """Whether these received bytes end the dump (``NLMSG_DONE`` or an error)."""
    return any(kind in (_NLMSG_DONE, _NLMSG_ERROR) for kind, _ in _messages(data))


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _flags, _seq, _port = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size or offset + length > len(data):
            return
        yield kind, data[offset + NLMSG_HEADER.size : offset + length]
        offset += (length + 3) & ~3


def _attributes(payload: bytes, start: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = start
    while offset + _RTATTR.size <= len(payload):
        length, kind = _RTATTR.unpack_from(payload, offset)
        if length < _RTATTR.size or offset + length > len(payload):
            break
        found.setdefault(kind & 0x3FFF, payload[offset + _RTATTR.size : offset + length])
        offset += (length + 3) & ~3
    return found


def _hex(raw: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in raw)


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(raw: bytes | None) -> int | None:
    return _U32.unpack(raw[:4])[0] if raw is not None and len(raw) >= 4 else None


def decode_netlink(links: bytes, addresses: bytes) -> list[dict[str, Any]]:
    """Interface records like ``ip -j addr``'s, from the bytes of an ``RTM_GETLINK`` and
    an ``RTM_GETADDR`` dump."""
    records: dict[int, dict[str, Any]] = {}
    masters: dict[int, int] = {}
    for kind, payload in _messages(links):
        if kind != _RTM_NEWLINK or len(payload) < _IFINFOMSG.size:
            continue
        _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(payload)
        attrs = _attributes(payload, _IFINFOMSG.size)
        if _IFLA_IFNAME not in attrs:
            continue
        record: dict[str, Any] = {"ifindex": index, "ifname": _text(attrs[_IFLA_IFNAME])}
        mtu = _u32(attrs.get(_IFLA_MTU))
        if mtu is not None:
            record["mtu"] = mtu
        state = attrs.get(_IFLA_OPERSTATE)
        if state:
            record["operstate"] = (
                _OPERSTATES[state[0]] if state[0] < len(_OPERSTATES) else "UNKNOWN"
            )
        if attrs.get(_IFLA_ADDRESS):
            record["address"] = _hex(attrs[_IFLA_ADDRESS])
        permanent = attrs.get(_IFLA_PERM_ADDRESS)
        if permanent and _hex(permanent) != record.get("address"):
            record["permaddr"] = _hex(permanent)
        master = _u32(attrs.get(_IFLA_MASTER))
        if master:
            masters[index] = master
        record["addr_info"] = []
        records[index] = record
    for index, master in masters.items():
        if master in records:
            records[index]["master"] = records[master]["ifname"]
    for kind, payload in _messages(addresses):
        if kind != _RTM_NEWADDR or len(payload) < _IFADDRMSG.size:
            continue
        family, prefixlen, header_flags, scope, index = _IFADDRMSG.unpack_from(payload)
        if family not in (socket.AF_INET, socket.AF_INET6) or index not in records:
            continue
        attrs = _attributes(payload, _IFADDRMSG.size)
        raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
        if raw is None or len(raw) != (4 if family == socket.AF_INET else 16):
            continue
        flags = _u32(attrs.get(_IFA_FLAGS))
        if flags is None:
            flags = header_flags
        info: dict[str, Any] = {
            "family": "inet" if family == socket.AF_INET else "inet6",
            "local": socket.inet_ntop(family, raw),
            "prefixlen": prefixlen,
            "scope": _SCOPES.get(scope, str(scope)),
        }
        if flags & 0x01:
            info["secondary" if family == socket.AF_INET else "temporary"] = True
        if not flags & _IFA_F_PERMANENT:
            info["dynamic"] = True
        for bit, name in _ADDRESS_FLAGS:
            if flags & bit:
                info[name] = True
        if family == socket.AF_INET and _IFA_LABEL in attrs:
            info["label"] = _text(attrs[_IFA_LABEL])
        records[index]["addr_info"].append(info)
    return list(records.values())


# -- bindings ---------------------------------------------------------------------------


def _packed(address: str) -> tuple[socket.AddressFamily, int, int]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    raw = socket.inet_pton(family, address)
    return family, int.from_bytes(raw, "big"), len(raw) * 8


def _format(family: socket.AddressFamily, value: int, bits: int) -> str:
    return socket.inet_ntop(family, value.to_bytes(bits // 8, "big"))


def _in(address: str, network: str, prefixlen: int) -> bool:
    family, value, bits = _packed(address)
    net_family, net, _ = _packed(network)
    shift = bits - prefixlen
    return family == net_family and value >> shift == net >> shift


def scope6(address: str) -> str:
    """``link``, ``site``, ``host`` or ``global``, ``compat,`` first for ``::a.b.c.d``."""
    _, value, _ = _packed(address)
    prefix = "compat," if value >> 32 == 0 and (value & 0xFFFFFFFF) not in (0, 1) else ""
    if _in(address, "fe80::", 10):
        return prefix + "link"
    if _in(address, "fec0::", 10):
        return prefix + "site"
    if value == 1:
        return prefix + "host"
    return prefix + "global"


def binding(address: str, prefixlen: int) -> dict[str, str]:
    """``{address, netmask, network}`` (and ``scope6`` for IPv6) of one address."""
    family, value, bits = _packed(address)
    prefixlen = max(0, min(prefixlen, bits))
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefixlen)) - 1)
    result = {
        "address": address,
        "netmask": _format(family, mask, bits),
        "network": _format(family, value & mask, bits),
    }
    if family == socket.AF_INET6:
        result["scope6"] = scope6(address)
    return result


def ignored(address: str) -> bool:
    """Whether Facter passes over this address when it picks an interface's ``ip``:
    loopback, link-local, unique local (``fc00::/7``)."""
    if not address:
        return True
    family, value, _ = _packed(address)
    if family == socket.AF_INET:
        return _in(address, "127.0.0.0", 8) or _in(address, "169.254.0.0", 16)
    return value == 1 or _in(address, "fe80::", 10) or _in(address, "fc00::", 7)


def _valid(bindings: Sequence[Mapping[str, str]]) -> Mapping[str, str]:
    return next((b for b in bindings if not ignored(b["address"])), bindings[0])


# Facter's names for an IPv6 address's flags, in its order (/proc/net/if_inet6).
_FLAGS6 = (
    ("temporary", "temporary"),
    ("noad", "nodad"),
    ("optimistic", "optimistic"),
    ("dadfailed", "dadfailed"),
    ("homeaddress", "home"),
    ("deprecated", "deprecated"),
    ("tentative", "tentative"),
)
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5,19}([0-9A-Fa-f]{2})$")


def _flags6(info: Mapping[str, Any]) -> list[str]:
    flags = [facter for facter, ip in _FLAGS6 if info.get(ip)]
    if not info.get("dynamic"):
        flags.append("permanent")
    return flags


def _mac(link: Mapping[str, Any]) -> str | None:
    # A bond's member carries the bond's address; Facter reports its own.
    mac = link.get("permaddr") if link.get("master") else None
    mac = mac or link.get("address")
    if isinstance(mac, str) and _MAC.match(mac) and mac != "00:00:00:00:00:00":
        return mac
    return None


# -- the fact ---------------------------------------------------------------------------


def default_route_interface(proc_net_route: str) -> str | None:
    """The interface of the first default route in ``/proc/net/route``."""
    for line in proc_net_route.splitlines()[1:]:
        fields = [field.strip() for field in line.strip().split("\t")]
        default = len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000"
        if default and fields[0] != "*":  # "*": a blackhole route, no interface
            return fields[0]
    return None


def hostnames(
    hostname: str,
    *,
    canonical: str | None = None,
    canonical_address: str | None = None,
    resolv_conf: str | None = None,
) -> dict[str, str]:
    """``hostname``, ``domain`` and ``fqdn`` as Facter works them out: from the host
    name, else its canonical name (``getaddrinfo``), else ``/etc/resolv.conf``."""
    if not hostname or "0.0.0.0" in hostname:  # noqa: S104 - a name, not an address to bind
        return {}
    host, _, domain = hostname.partition(".")
    fqdn = None
    if not domain and canonical and canonical not in (host, canonical_address):
        fqdn = canonical
        if fqdn.startswith(f"{host}."):
            domain = fqdn.partition(".")[2]
    if not domain and resolv_conf:
        found = re.search(r"^domain\s+([^.]\S+)", resolv_conf, re.MULTILINE) or re.search(
            r"^search\s+([^.]\S+)", resolv_conf, re.MULTILINE
        )
        domain = found.group(1) if found else ""
    if not fqdn:
        fqdn = f"{host}.{domain}" if domain else host
    result = {"fqdn": fqdn, "hostname": host}
    if domain:
        result["domain"] = domain
    return result


def networking(
    links: Sequence[Mapping[str, Any]],
    *,
    route: str | None = None,
    names: Mapping[str, str] | None = None,
    sysfs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``networking`` fact.

    ``links`` are ``ip -j addr`` records; ``route`` is ``/proc/net/route``; ``names``
    comes from :func:`hostnames`; ``sysfs`` has, by interface, what
    ``/sys/class/net/<name>`` says: ``physical`` (it has a ``device``), and for physical
    ones ``speed`` (Mb/s) and ``duplex``.
    """
    interfaces: dict[str, dict[str, Any]] = {}
    for link in links:
        name = link.get("ifname")
        if not isinstance(name, str) or not name:
            continue
        iface = interfaces.setdefault(name, {})
        mac = _mac(link)
        if mac:
            iface["mac"] = mac
        for info in link.get("addr_info") or ():
            local, prefixlen = info.get("local"), info.get("prefixlen")
            if not isinstance(local, str) or not isinstance(prefixlen, int):
                continue
            try:
                found: dict[str, Any] = binding(local, prefixlen)
            except (OSError, ValueError):
                continue
            if info.get("family") == "inet":
                label = info.get("label") or name
                interfaces.setdefault(label, {}).setdefault("bindings", []).append(found)
            elif info.get("family") == "inet6":
                found["flags"] = _flags6(info)
                iface.setdefault("bindings6", []).append(found)
        if isinstance(link.get("mtu"), int):
            iface["mtu"] = link["mtu"]
        if isinstance(link.get("operstate"), str):
            iface["operational_state"] = link["operstate"].lower()
    if sysfs is not None:
        for name, iface in interfaces.items():
            extra = sysfs.get(name, {})
            iface["physical"] = bool(extra.get("physical"))
            if iface["physical"]:
                for key in ("speed", "duplex"):
                    if extra.get(key) is not None:
                        iface[key] = extra[key]
    for iface in interfaces.values():
        if iface.get("bindings"):
            chosen = _valid(iface["bindings"])
            iface.update(ip=chosen["address"], netmask=chosen["netmask"])
            iface["network"] = chosen["network"]
        if iface.get("bindings6"):
            chosen = _valid(iface["bindings6"])
            iface.update(ip6=chosen["address"], netmask6=chosen["netmask"])
            iface.update(network6=chosen["network"], scope6=scope6(chosen["address"]))
    primary = default_route_interface(route) if route else None
    if primary is None:
        primary = next(
            (
                name
                for name, iface in interfaces.items()
                if any(
                    not ignored(b["address"])
                    for b in (*iface.get("bindings", ()), *iface.get("bindings6", ()))
                )
            ),
            None,
        )
    result: dict[str, Any] = dict(names or {})
    result["interfaces"] = {name: dict(sorted(iface.items())) for name, iface in interfaces.items()}
    if primary is not None:
        result["primary"] = primary
        for key, value in interfaces.get(primary, {}).items():
            if key not in ("bindings", "bindings6"):
                result[key] = value
    return dict(sorted(result.items()))
