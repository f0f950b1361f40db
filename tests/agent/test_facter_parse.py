"""The pure parses, on files recorded from real machines (``facter_inputs/<kind>/<case>/``:
the raw files beside ``expected.json``) and on small inline inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from podium.agent.facter import parse

INPUTS = Path(__file__).parent / "facter_inputs"


def cases(kind: str) -> list[Path]:
    return sorted(path for path in (INPUTS / kind).iterdir() if path.is_dir())


def expected(case: Path) -> Any:
    return json.loads((case / "expected.json").read_text())


def optional(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


# -- recorded inputs ------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("os"), ids=lambda case: case.name)
def test_the_os_fact_is_read_from_os_release_and_the_release_files(case):
    redhat = optional(case / "redhat-release")
    value = parse.os_fact(
        parse.os_release((case / "os-release").read_text()),
        machine=(case / "uname-m").read_text().strip(),
        debian_version=optional(case / "debian_version"),
        redhat=parse.redhat_release(redhat) if redhat else None,
    )
    assert value == expected(case)


@pytest.mark.parametrize("case", cases("meminfo"), ids=lambda case: case.name)
def test_memory_is_read_from_meminfo(case):
    assert parse.memory((case / "meminfo").read_text()) == expected(case)


@pytest.mark.parametrize("case", cases("cpuinfo"), ids=lambda case: case.name)
def test_processors_are_read_from_cpuinfo(case):
    machine = "aarch64" if "aarch64" in case.name else "x86_64"
    packages = (optional(case / "physical_package_id") or "").split()
    value = parse.processors((case / "cpuinfo").read_text(), machine=machine, package_ids=packages)
    assert value == expected(case)


@pytest.mark.parametrize("case", cases("mounts"), ids=lambda case: case.name)
def test_mounts_leave_out_proc_sys_and_autofs(case):
    found = [
        {"device": m.device, "path": m.path, "filesystem": m.filesystem, "options": list(m.options)}
        for m in parse.mounts((case / "mounts").read_text())
    ]
    assert found == expected(case)


def test_uptime_is_read_from_proc_uptime():
    case = INPUTS / "uptime" / "this-machine"
    assert parse.system_uptime((case / "uptime").read_text()) == expected(case)


def test_load_averages_are_read_from_proc_loadavg():
    case = INPUTS / "loadavg" / "this-machine"
    assert parse.load_averages((case / "loadavg").read_text()) == expected(case)


def test_filesystems_are_the_block_ones_sorted_without_fuseblk():
    case = INPUTS / "filesystems" / "this-machine"
    assert parse.filesystems((case / "filesystems").read_text()) == expected(case)


# -- inline inputs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (25_276_059_648, "23.54 GiB"),
        (1024**3 - 1024, "1.00 GiB"),  # 1023.999 MiB rounds up to the next unit, as in Facter
        (5 * 1024**4, "5.00 TiB"),
        (3 * 1024**7, "3072.00 EiB"),  # no unit past EiB
    ],
)
def test_sizes_are_written_as_facter_writes_them(count, text):
    assert parse.human_bytes(count) == text


def test_speeds_and_capacities_are_written_as_facter_writes_them():
    assert parse.human_hertz(2_596_000_000) == "2.60 GHz"
    assert parse.human_hertz(800_000_000) == "800.00 MHz"
    assert parse.human_hertz(0) is None
    assert parse.capacity(0, 0) == "100%"
    assert parse.capacity(0, 10) == "0%"
    assert parse.capacity(1, 3) == "33.33%"


def test_uptime_says_hours_under_a_day_then_days():
    assert parse.system_uptime("3725.4 100.0")["uptime"] == "1:02 hours"
    assert parse.system_uptime("90000.0 1.0") == {
        "days": 1,
        "hours": 25,
        "seconds": 90000,
        "uptime": "1 day",
    }
    assert parse.system_uptime("864000.99 1.0")["uptime"] == "10 days"


def test_kernel_versions_come_from_the_release():
    assert parse.kernel_facts("Linux", "6.1.0-18-amd64") == {
        "kernel": "Linux",
        "kernelrelease": "6.1.0-18-amd64",
        "kernelversion": "6.1.0",
        "kernelmajversion": "6.1",
    }
    assert parse.kernel_facts("Linux", "5.14.0-362.8.1.el9_3.x86_64")["kernelversion"] == "5.14.0"


def test_os_release_values_lose_their_quotes_and_comments_are_skipped():
    text = "# comment\nNAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID='12'\n\nbroken line\n"
    assert parse.os_release(text) == {
        "name": "Debian GNU/Linux",
        "id": "debian",
        "version_id": "12",
    }


def test_a_rhel_like_system_without_redhat_release_uses_version_id():
    release = {"name": "AlmaLinux", "id": "almalinux", "id_like": "rhel centos fedora"}
    value = parse.os_fact({**release, "version_id": "9"}, machine="x86_64")
    assert value["family"] == "RedHat"
    assert value["name"] == "AlmaLinux"
    assert value["release"] == {"full": "9.0", "major": "9", "minor": "0"}
    assert value["architecture"] == "x86_64"


def test_debian_without_debian_version_falls_back_to_version_id():
    value = parse.os_fact(
        {"name": "Debian GNU/Linux", "id": "debian", "version_id": "12"}, machine="i686"
    )
    assert value["release"] == {"full": "12.0", "major": "12", "minor": "0"}
    assert value["architecture"] == "i386"
    assert "codename" not in value["distro"]


def test_debian_codenames_come_from_the_version_when_version_codename_is_missing():
    release = {"name": "Debian GNU/Linux", "id": "debian", "version": "9 (stretch)"}
    value = parse.os_fact(release, machine="x86_64", debian_version="9.13\n")
    assert value["distro"]["codename"] == "stretch"
    assert value["release"] == {"full": "9.13", "major": "9", "minor": "13"}


def test_names_are_shortened_as_facter_shortens_them():
    names = {
        "Red Hat Enterprise Linux": "RedHat",
        "Oracle Linux Server": "OracleLinux",
        "Arch Linux": "Archlinux",
        "CentOS Stream": "CentOS",
        "SLES_SAP": "SLES",
        "Fedora Linux": "Fedora",
        "Virtuozzo": "VirtuozzoLinux",
    }
    for name, short in names.items():
        assert parse.os_fact({"name": name, "id": "x"}, machine="x86_64")["name"] == short


def test_redhat_release_gives_id_version_and_codename():
    found = parse.redhat_release("CentOS Stream release 9\n")
    assert found is not None
    assert (found.distributor_id, found.version, found.codename) == ("CentOSStream", "9", None)
    assert parse.redhat_release("   \n") is None


def test_selinux_is_enabled_only_when_mounted_and_configured():
    mounts = "selinuxfs /sys/fs/selinux selinuxfs rw,relatime 0 0\nproc /proc proc rw 0 0\n"
    assert parse.selinux_mount(mounts) == "/sys/fs/selinux"
    assert parse.selinux_mount("proc /proc proc rw 0 0\n") is None
    off = parse.selinux_fact(
        mounted=False, config="SELINUX=enforcing\n", enforce="1", policy_version="33"
    )
    assert off == {"enabled": False}
    config = "SELINUX=enforcing\nSELINUXTYPE=targeted\n"
    on = parse.selinux_fact(mounted=True, config=config, enforce="1\n", policy_version="33\n")
    assert on == {
        "enabled": True,
        "config_mode": "enforcing",
        "config_policy": "targeted",
        "enforced": True,
        "current_mode": "enforcing",
        "policy_version": "33",
    }
    permissive = parse.selinux_fact(mounted=True, config=config, enforce="0", policy_version=None)
    assert (permissive["enforced"], permissive["current_mode"]) == (False, "permissive")


def test_disks_report_size_type_model_and_vendor():
    found = parse.disks(
        {
            "sda": {"size": "976773168\n", "model": "Samsung SSD 860 \n", "vendor": "ATA     \n",
                    "rotational": "0\n"},
            "vda": {"size": "536870912\n", "vendor": "0x1af4\n", "rotational": "1\n"},
        }
    )  # fmt: skip
    assert found == {
        "sda": {
            "model": "Samsung SSD 860",
            "size": "465.76 GiB",
            "size_bytes": 500107862016,
            "type": "ssd",
            "vendor": "ATA",
        },
        "vda": {
            "size": "256.00 GiB",
            "size_bytes": 274877906944,
            "type": "hdd",
            "vendor": "0x1af4",
        },
    }


def test_a_mountpoint_has_facters_sizes():
    mount = parse.Mount("/dev/vda", "/", "ext4", ("rw", "relatime"))
    gib = 1024**3
    value = parse.mountpoint(mount, size=100 * gib, available=60 * gib, free=65 * gib)
    assert value == {
        "available": "60.00 GiB",
        "available_bytes": 60 * gib,
        "capacity": "36.84%",  # used / (used + available), as Facter computes it
        "device": "/dev/vda",
        "filesystem": "ext4",
        "options": ["rw", "relatime"],
        "size": "100.00 GiB",
        "size_bytes": 100 * gib,
        "used": "35.00 GiB",
        "used_bytes": 35 * gib,
    }


def test_the_root_device_comes_from_the_kernel_command_line():
    assert parse.root_device("BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet") == "/dev/sda1"
    assert parse.root_device("BOOT_IMAGE=/vmlinuz root=UUID=1234-abcd ro") == "UUID=1234-abcd"
    assert parse.root_device("quiet") is None


def test_dmi_names_the_chassis_and_leaves_out_empty_values():
    ids = {"bios_vendor": "SeaBIOS\n", "product_name": "Standard PC\n", "chassis_type": "1\n",
           "sys_vendor": "QEMU\n", "board_serial": "\n"}  # fmt: skip
    assert parse.dmi(ids) == {
        "bios": {"vendor": "SeaBIOS"},
        "chassis": {"type": "Other"},
        "manufacturer": "QEMU",
        "product": {"name": "Standard PC"},
    }


@pytest.mark.parametrize(
    ("probes", "virtual", "hypervisors"),
    [
        (parse.VirtualProbes(), "physical", {}),
        (
            parse.VirtualProbes(dockerenv=True, cgroup="0::/\n", pci_vendors=("0x8086", "0x1af4")),
            "docker",
            {"docker": {}, "kvm": {}},
        ),
        (
            parse.VirtualProbes(cgroup="12:pids:/docker/4f9c2a\n"),
            "docker",
            {"docker": {"id": "4f9c2a"}},
        ),
        (parse.VirtualProbes(cgroup="1:name=systemd:/lxc/web\n"), "lxc", {"lxc": {"name": "web"}}),
        (
            parse.VirtualProbes(container="systemd-nspawn", machine_id="abc\n"),
            "systemd_nspawn",
            {"systemd_nspawn": {"id": "abc"}},
        ),
        (
            parse.VirtualProbes(bios_vendor="Amazon EC2", sys_vendor="Amazon EC2"),
            "kvm",
            {"kvm": {"amazon": True}},
        ),
        (parse.VirtualProbes(bios_vendor="Google", sys_vendor="Google"), "gce", {}),
        (parse.VirtualProbes(product_name="VMware Virtual Platform"), "vmware", {"vmware": {}}),
        (parse.VirtualProbes(product_name="Virtual Machine"), "hyperv", {"hyperv": {}}),
        (
            parse.VirtualProbes(xen_evtchn=True),
            "xen0",
            {"xen": {"context": "pv", "privileged": True}},
        ),
        (parse.VirtualProbes(clocksources="tsc kvm-clock \n"), "kvm", {"kvm": {}}),
        (
            parse.VirtualProbes(openvz_entries=3, status="Name:\tbash\nenvID:\t101\n"),
            "openvzve",
            {"openvz": {"host": False, "id": 101}},
        ),
    ],
)
def test_virtualization_is_worked_out_as_facter_does(probes, virtual, hypervisors):
    value = parse.virtualization(probes)
    assert value["virtual"] == virtual
    assert value["is_virtual"] is (virtual not in ("physical", "xen0"))
    assert value["hypervisors"] == hypervisors


def test_a_variable_of_pid_1s_environment_is_found():
    environ = b"HOME=/\x00container=podman\x00TERM=xterm\x00"
    assert parse.environ_value(environ, "container") == "podman"
    assert parse.environ_value(environ, "missing") is None
