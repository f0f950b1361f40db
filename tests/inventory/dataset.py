"""A small fleet for the query tests: 30 nodes whose facts exercise every corner.

Nested and flat facts, arrays (of scalars, of objects, nested), numbers (integers,
floats, negative, beyond 2**53), booleans, nulls, empty objects and arrays, strings
that look like numbers, keys with dots and spaces, a missing fact on some nodes, three
environments (and a node without one), deactivated nodes (one of them reactivated by
newer facts). Every time is fixed, so answers can be written down.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from podium.inventory.store import FactsCommand, InventoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PRODUCER = "puppet.example.com"

# certname: (environment, os, role, datacenter, cpus, memory GiB, virtual)
_NODES: dict[str, tuple[str | None, str, str, str | None, int, int, str]] = {
    "web01.ams.example.com": ("production", "debian12", "web", "ams", 2, 4, "kvm"),
    "web02.ams.example.com": ("production", "debian12", "web", "ams", 4, 8, "kvm"),
    "web03.fra.example.com": ("production", "ubuntu22", "web", "fra", 4, 8, "vmware"),
    "web04.fra.example.com": ("staging", "ubuntu22", "web", "fra", 2, 4, "docker"),
    "web05.nyc.example.com": ("production", "rhel9", "web", "nyc", 8, 16, "kvm"),
    "web06.nyc.example.com": ("development", "rhel9", "web", None, 1, 2, "docker"),
    "api01.ams.example.com": ("production", "debian11", "api", "ams", 4, 8, "kvm"),
    "api02.fra.example.com": ("production", "rhel8", "api", "fra", 8, 32, "physical"),
    "api03.nyc.example.com": ("staging", "centos7", "api", "nyc", 2, 4, "kvm"),
    "db01.ams.example.com": ("production", "debian12", "db", "ams", 16, 64, "physical"),
    "db02.ams.example.com": ("production", "debian12", "db", "ams", 16, 128, "physical"),
    "db03.fra.example.com": ("production", "rhel9", "db", "fra", 32, 256, "physical"),
    "db04.nyc.example.com": ("staging", "ubuntu20", "db", "nyc", 8, 32, "vmware"),
    "cache01.ams.example.com": ("production", "debian12", "cache", "ams", 2, 16, "kvm"),
    "cache02.fra.example.com": ("production", "ubuntu22", "cache", "fra", 2, 16, "kvm"),
    "lb01.ams.example.com": ("production", "debian12", "lb", "ams", 1, 1, "kvm"),
    "lb02.fra.example.com": ("production", "debian12", "lb", None, 1, 1, "kvm"),
    "worker01.ams.example.com": ("development", "ubuntu22", "worker", "ams", 4, 8, "docker"),
    "worker02.fra.example.com": ("development", "ubuntu22", "worker", "fra", 4, 8, "docker"),
    "worker03.nyc.example.com": ("staging", "rhel8", "worker", "nyc", 8, 16, "vmware"),
    "queue01.ams.example.com": ("production", "debian11", "queue", "ams", 2, 8, "kvm"),
    "mon01.ams.example.com": ("production", "debian12", "monitoring", "ams", 2, 4, "kvm"),
    "build01.fra.example.com": ("development", "ubuntu20", "build", "fra", 16, 32, "physical"),
    "win01.ams.example.com": ("production", "win2019", "web", "ams", 4, 8, "hyperv"),
    "win02.nyc.example.com": ("staging", "win2022", "api", "nyc", 4, 16, "hyperv"),
    "edge01.sin.example.com": (None, "debian12", "edge", "sin", 1, 2, "kvm"),
    "old01.ams.example.com": ("production", "centos7", "db", "ams", 4, 8, "vmware"),
    "old02.fra.example.com": ("production", "centos7", "web", "fra", 2, 4, "vmware"),
    "back01.ams.example.com": ("production", "debian12", "backup", "ams", 8, 16, "kvm"),
    "stor01.fra.example.com": ("production", "rhel9", "storage", "fra", 16, 64, "physical"),
}

# Deactivated and left so: their facts stay, queries leave them out by default.
DEACTIVATED = ("old01.ams.example.com", "old02.fra.example.com")
# Deactivated, then newer facts came: active again.
REACTIVATED = "back01.ams.example.com"

_OS = {
    "debian12": ("Debian", "Debian", "12", "12.7", "bookworm"),
    "debian11": ("Debian", "Debian", "11", "11.11", "bullseye"),
    "ubuntu22": ("Debian", "Ubuntu", "22.04", "22.04", "jammy"),
    "ubuntu20": ("Debian", "Ubuntu", "20.04", "20.04", "focal"),
    "rhel9": ("RedHat", "RedHat", "9", "9.4", "Plow"),
    "rhel8": ("RedHat", "RedHat", "8", "8.10", "Ootpa"),
    "centos7": ("RedHat", "CentOS", "7", "7.9.2009", "Core"),
    "win2019": ("windows", "windows", "2019", "2019", None),
    "win2022": ("windows", "windows", "2022", "2022", None),
}
_EXTRA_ROLES = {"web": ["monitoring"], "db": ["backup", "monitoring"], "api": ["backup"]}


def facts_of(index: int, certname: str) -> tuple[str | None, dict[str, Any]]:
    """The environment and facts of the ``index``-th node."""
    environment, os_key, role, datacenter, cpus, memory, virtual = _NODES[certname]
    family, name, major, full, codename = _OS[os_key]
    hostname = certname.split(".")[0]
    windows = family == "windows"
    release: dict[str, Any] = {"major": major, "full": full}
    if codename is not None:
        release["codename"] = codename
    values: dict[str, Any] = {
        "kernel": "windows" if windows else "Linux",
        "os": {"family": family, "name": name, "release": release},
        "osfamily": family,
        "processors": {"count": cpus, "models": ["Xeon"] * min(cpus, 3), "isa": "x86_64"},
        "memory": {
            "system": {
                "total_bytes": memory * 2**30,
                "available": f"{memory * 0.5:.2f} GiB",
                "used_ratio": round(0.25 + (index % 5) * 0.1, 2),
            }
        },
        "networking": {
            "hostname": hostname,
            "ip": f"10.0.{index // 10}.{index}",
            "interfaces": _interfaces(index, windows),
        },
        "role": role,
        "roles": [role, *_EXTRA_ROLES.get(role, [])],
        "is_virtual": virtual != "physical",
        "virtual": virtual,
        "uptime_seconds": 3600 * (index + 1) * 7,
        "load_averages": {"1m": round(index * 0.25, 2), "5m": 0.5},
        "kernelmajversion": "5" if not windows else "10",
        "zipcode": f"{index:05d}",  # a string of digits, never a number
        "ssh": {"rsa": {"key": f"AAAAB3{index:04d}", "type": "ssh-rsa"}} if not windows else {},
        "disks": [{"name": "sda", "size_bytes": 2**36 * (1 + index % 3)}],
        "matrix": [[index, index + 1], [index * 2]],
        "cloud": None,
        "tags": [],
        "labels": {},
        "serial": 2**60 + index,  # beyond what a double holds exactly
        "temperature": -5 + index,
        "trusted": {
            "certname": certname,
            "authenticated": "remote",
            "extensions": {"pp_role": role} if index % 3 == 0 else {},
        },
        "dotted.key": f"dotted-{index % 2}",
        "spaced key": "yes" if index % 2 else "no",
        "motd": "Bienvenue à bord" if index % 4 == 0 else "welcome",
    }
    if datacenter is not None:
        values["datacenter"] = datacenter
    if index % 7 == 3:
        values["puppet_version"] = 7
    elif index % 7 == 5:
        values["puppet_version"] = "7"  # the same fact as text on some nodes
    return environment, values


def _interfaces(index: int, windows: bool) -> dict[str, Any]:
    if windows:
        return {"Ethernet0": {"mtu": 1500, "mac": f"00:15:5d:00:00:{index:02x}"}}
    interfaces: dict[str, Any] = {
        "lo": {"mtu": 65536, "ip": "127.0.0.1"},
        "eth0": {
            "mtu": 9000 if index % 3 == 0 else 1500,
            "ip": f"10.0.{index // 10}.{index}",
            "mac": f"52:54:00:00:00:{index:02x}",
            "bindings": [{"address": f"10.0.{index // 10}.{index}", "netmask": "255.255.255.0"}],
        },
    }
    if index % 4 == 1:
        interfaces["eth1"] = {"mtu": 1500, "ip": f"192.168.0.{index}"}
    return interfaces


def commands() -> list[FactsCommand]:
    """The fleet's facts, one command per node, each received at a time of its own."""
    out = []
    for index, certname in enumerate(_NODES):
        environment, values = facts_of(index, certname)
        at = T0 + timedelta(minutes=index)
        out.append(
            FactsCommand(
                certname, values, environment, at, PRODUCER, received=at + timedelta(seconds=1)
            )
        )
    return out


def load(inventory: InventoryStore) -> None:
    """Store the fleet as the tests expect it: facts, then deactivations."""
    inventory.replace_facts_many(commands())
    later = T0 + timedelta(hours=1)
    for certname in (*DEACTIVATED, REACTIVATED):
        inventory.deactivate_node(certname, later)
    index = list(_NODES).index(REACTIVATED)
    environment, values = facts_of(index, REACTIVATED)
    newer = FactsCommand(
        REACTIVATED,
        values,
        environment,
        later + timedelta(hours=1),
        PRODUCER,
        received=later + timedelta(hours=1, seconds=1),
    )
    inventory.replace_facts_many([newer])


def documents() -> dict[str, dict[str, Any]]:
    """Every node's facts, for checks that compute answers in Python."""
    return {name: facts_of(i, name)[1] for i, name in enumerate(_NODES)}


def environments() -> dict[str, str | None]:
    return {name: facts_of(i, name)[0] for i, name in enumerate(_NODES)}


def active() -> list[str]:
    return sorted(name for name in _NODES if name not in DEACTIVATED)
