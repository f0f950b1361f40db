"""The whole collection on this machine, its fault tolerance, and Facter when installed."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from podium import __version__
from podium.agent.facter import collect
from podium.agent.facts import gather

SIZE = re.compile(r"^\d+(\.\d\d)? (bytes|KiB|MiB|GiB|TiB|PiB|EiB)$")


def check_usage(usage: dict[str, Any]) -> None:
    for key in ("total", "available", "used"):
        assert SIZE.match(usage[key]), usage
        assert isinstance(usage[f"{key}_bytes"], int)
    assert re.match(r"^\d+(\.\d\d)?%$", usage["capacity"])


def test_the_built_in_collection_describes_this_machine_in_facters_schema():
    facts = collect.builtin()

    os_fact = facts["os"]
    assert os_fact["family"] == "Debian"
    for key in ("name", "architecture", "hardware"):
        assert isinstance(os_fact[key], str)
    for release in (os_fact["release"], os_fact["distro"]["release"]):
        assert isinstance(release["full"], str)
        assert isinstance(release["major"], str)
    for key in ("codename", "description", "id"):
        assert isinstance(os_fact["distro"][key], str)
    assert isinstance(os_fact["selinux"]["enabled"], bool)

    for key in ("kernel", "kernelrelease", "kernelversion", "kernelmajversion", "timezone"):
        assert isinstance(facts[key], str)
    assert facts["kernel"] == "Linux"
    assert facts["kernelrelease"].startswith(facts["kernelmajversion"])

    networking = facts["networking"]
    assert isinstance(networking["hostname"], str)
    assert isinstance(networking["fqdn"], str)
    assert networking["interfaces"]["lo"]["ip"] == "127.0.0.1"
    for iface in networking["interfaces"].values():
        for binding in iface.get("bindings", []) + iface.get("bindings6", []):
            assert {"address", "netmask", "network"} <= binding.keys()
        if "mtu" in iface:
            assert isinstance(iface["mtu"], int)
    if "primary" in networking:
        assert networking["primary"] in networking["interfaces"]
        assert isinstance(networking["ip"], str)

    processors = facts["processors"]
    assert processors["count"] >= 1
    assert processors["physicalcount"] >= 1
    assert all(isinstance(model, str) for model in processors["models"])
    assert isinstance(processors["isa"], str)

    check_usage(facts["memory"]["system"])
    if "swap" in facts["memory"]:
        check_usage(facts["memory"]["swap"])

    uptime = facts["system_uptime"]
    assert all(isinstance(uptime[key], int) for key in ("seconds", "hours", "days"))
    assert isinstance(uptime["uptime"], str)
    assert set(facts["load_averages"]) == {"1m", "5m", "15m"}
    assert all(isinstance(value, float) for value in facts["load_averages"].values())

    identity = facts["identity"]
    assert isinstance(identity["uid"], int)
    assert isinstance(identity["user"], str)
    assert isinstance(identity["privileged"], bool)
    assert isinstance(facts["path"], str)
    assert isinstance(facts["virtual"], str)
    assert isinstance(facts["is_virtual"], bool)
    assert isinstance(facts["filesystems"], str)
    root = facts["mountpoints"]["/"]
    for key in ("size", "available", "used"):
        assert SIZE.match(root[key]), root
        assert isinstance(root[f"{key}_bytes"], int)
    assert isinstance(root["device"], str)
    assert isinstance(root["options"], list)
    for disk in facts.get("disks", {}).values():
        assert isinstance(disk["size_bytes"], int)

    json.dumps(facts, allow_nan=False)


def test_the_agent_adds_its_own_facts_to_the_collection(tmp_path):
    facts = gather("web-01", factsdirs=[tmp_path], use_facter=False)
    assert facts["certname"] == "web-01"
    assert facts["podium_agent_version"] == __version__
    assert facts["os"]["family"] == "Debian"
    assert "hostname" not in facts  # Facter 4's legacy facts are not sent


def test_a_fact_that_cannot_be_read_is_left_out_and_the_others_stay(monkeypatch, caplog):
    real = collect._read

    def missing_meminfo(path: str | Path) -> str:
        if str(path) == "/proc/meminfo":
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real(path)

    monkeypatch.setattr(collect, "_read", missing_meminfo)
    with caplog.at_level(logging.DEBUG, logger="podium.agent.facter.collect"):
        facts = collect.builtin()
    assert "memory" not in facts
    assert facts["os"]["family"] == "Debian"
    assert "no memory fact" in caplog.text


def test_a_read_that_breaks_only_loses_its_own_facts():
    def broken() -> dict[str, Any]:
        raise RuntimeError("unexpected")

    reads = (("broken", broken), ("kernel", collect.read_kernel))
    assert set(collect.builtin(reads)) == {
        "kernel",
        "kernelrelease",
        "kernelversion",
        "kernelmajversion",
    }


def test_networking_falls_back_to_ip_when_netlink_is_refused(monkeypatch):
    def refused(kind: int) -> bytes:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(collect, "_netlink_dump", refused)
    links = collect.read_links()
    assert "lo" in [link["ifname"] for link in links]


def fake_facter(folder: Path, script: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "facter"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


def test_facter_is_asked_when_it_is_installed(tmp_path, monkeypatch):
    printed = {"os": {"family": "RedHat"}, "certname": "spoofed", "kernel": "Linux"}
    bin_dir = tmp_path / "bin"
    fake_facter(bin_dir, f"[ \"$1\" = --json ] || exit 9\necho '{json.dumps(printed)}'\n")
    factsdir = tmp_path / "facts.d"
    factsdir.mkdir()
    (factsdir / "role.txt").write_text("role=db\nkernel=Custom\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert collect.find_facter() == str(bin_dir / "facter")
    facts = gather("web-01", factsdirs=[factsdir])
    assert facts == {
        "os": {"family": "RedHat"},
        "kernel": "Custom",  # external facts override core ones
        "role": "db",
        "certname": "web-01",
        "podium_agent_version": __version__,
    }


def test_a_failing_facter_falls_back_to_the_built_in_facts(tmp_path, caplog):
    facter = fake_facter(tmp_path / "bin", "echo 'no ruby' >&2\nexit 1\n")
    with caplog.at_level(logging.WARNING):
        facts = gather("web-01", facter=str(facter))
    assert facts["os"]["family"] == "Debian"
    assert "using the built-in facts" in caplog.text
    assert "no ruby" in caplog.text


@pytest.mark.parametrize("output", ["[1, 2]", "not json"])
def test_facter_printing_no_object_falls_back(tmp_path, output, caplog):
    facter = fake_facter(tmp_path / "bin", f"echo '{output}'\n")
    with caplog.at_level(logging.WARNING):
        assert collect.facter_json(str(facter)) is None
    assert "using the built-in facts" in caplog.text


def test_a_facter_that_hangs_is_stopped(tmp_path, caplog):
    facter = fake_facter(tmp_path / "bin", "exec sleep 30\n")
    with caplog.at_level(logging.WARNING):
        assert collect.facter_json(str(facter), timeout=0.5) is None
    assert "did not finish within 0.5 s" in caplog.text
