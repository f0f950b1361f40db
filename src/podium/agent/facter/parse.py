"""Pure parses: what a file of ``/proc``, ``/sys`` or ``/etc`` says, as Facter 4 says it.

Every function takes text (or a few values already read) and returns a fact's value;
none reads a file, runs a command or looks at the clock. Where Facter runs a command
(``uname -p``, ``lscpu``, ``virt-what``, ``lspci``, ``blkid``), the parse takes what the
kernel exposes in a file instead, and the docstring says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# -- units, as Facter's UnitConverter writes them --------------------------------------

_BINARY_PREFIXES = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _round_half_up(value: float) -> float:
    return math.floor(value + 0.5)


def human_bytes(count: int) -> str:
    """``"23.54 GiB"``; ``"512 bytes"`` under 1 KiB."""
    if count < 1024:
        return f"{count} bytes"
    exp = min(math.floor(math.log2(count) / 10), len(_BINARY_PREFIXES))
    number = _round_half_up(100.0 * (count / 1024.0**exp)) / 100.0
    if abs(number - 1024.0) < 1e-9:
        exp += 1
        number = 1.0
    return f"{number:.2f} {_BINARY_PREFIXES[exp - 1]}"


def human_hertz(hertz: int) -> str | None:
    """``"2.60 GHz"``; None for no speed."""
    if hertz <= 0:
        return None
    power = math.floor(math.log10(hertz))
    exponent = power - power % 3
    prefix = {0: "", 3: "k", 6: "M", 9: "G", 12: "T"}.get(exponent, "")
    return f"{hertz / 10**exponent:.2f} {prefix}Hz"


def capacity(used: int, total: int) -> str:
    """Used as a share of total, ``"12.34%"``, as Facter's mountpoints write it."""
    if used == total:
        return "100%"
    if used > 0 and total > 0:
        return f"{used / total * 100:.2f}%"
    return "0%"


# -- os ---------------------------------------------------------------------------------


def os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` as ``{lowercased key: value}``, quotes removed."""
    pairs: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        pairs[key.strip().lower()] = value.replace('\\"', '"')
    return pairs


# Facter's OS hierarchy (facter/config.rb), flattened: a distribution and its parents.
_RHEL_LIKE = ("fedora", "amzn", "centos", "ol", "scientific", "meego", "oel", "ovs", "mariner")
_OTHERS = ("archlinux", "gentoo", "alpine", "photon", "slackware", "mageia", "openwrt")
_HIERARCHY: dict[str, tuple[str, ...]] = {
    "debian": ("debian",),
    "elementary": ("debian", "elementary"),
    "ubuntu": ("debian", "ubuntu"),
    "linuxmint": ("debian", "ubuntu", "linuxmint"),
    "raspbian": ("debian", "raspbian"),
    "devuan": ("debian", "devuan"),
    "rhel": ("rhel",),
    **{name: ("rhel", name) for name in (*_RHEL_LIKE, "azurelinux")},
    "sles": ("sles",),
    "opensuse": ("sles", "opensuse"),
    "sled": ("sles", "sled"),
    **{name: (name,) for name in _OTHERS},
}

# Facter's families (Facter::Util::Facts::FAMILY_HASH): matched as substrings of ID_LIKE.
_FAMILIES = (
    (
        "RedHat",
        ("redhat", "rhel", "fedora", "centos", "scientific", "ascendos", "cloudlinux", "psbm",
         "oraclelinux", "ovs", "oel", "amazon", "xenserver", "xcp-ng", "virtuozzo", "photon",
         "mariner", "azurelinux"),
    ),
    ("Debian", ("debian", "ubuntu", "huaweios", "linuxmint", "devuan", "kde")),
    ("Suse", ("sles", "sled", "suse")),
    ("Gentoo", ("gentoo",)),
    ("Archlinux", ("arch", "manjaro")),
    ("Mandrake", ("mandrake", "mandriva", "mageia")),
)  # fmt: skip


def _hierarchy(release: Mapping[str, str]) -> tuple[str, ...]:
    """Where Facter places this distribution: by its ``ID``, else the first ``ID_LIKE``
    it knows, else plain Linux (``()``)."""
    ident = release.get("id", "").lower()
    if "sles_sap" in ident:
        ident = "sles"
    elif "opensuse" in ident:
        ident = "opensuse"
    for candidate in (ident, *release.get("id_like", "").lower().split()):
        if candidate in _HIERARCHY:
            return _HIERARCHY[candidate]
    return ()


def _family(release: Mapping[str, str]) -> str:
    like = release.get("id_like") or release.get("id", "")
    for family, members in _FAMILIES:
        if any(re.search(re.escape(member), like, re.IGNORECASE) for member in members):
            return family
    return like.capitalize()


def _os_name(name: str) -> str:
    """Facter's short name from ``NAME``: ``Debian``, ``RedHat``, ``Rocky``, ``OracleLinux``."""
    if name.lower().startswith("sles"):
        name = "SLES"
    low = name.lower()
    words = name.split(" ")
    if low.startswith(("red", "oracle", "arch", "manjaro")):
        name = "".join(words[0:2])
    elif low.endswith("azure linux"):
        name = "".join(words[1:3])
    elif low.endswith("mariner"):
        name = words[-1].strip()
    else:
        name = words[0].strip()
    if name.lower().startswith(("arch", "manjaro")):
        name = name.capitalize()
    if name.lower().startswith("virtuozzo"):
        name += "Linux"
    return name


def _version_id(release: Mapping[str, str]) -> str | None:
    version = release.get("version_id")
    if version and "." not in version:
        version += ".0"  # as Facter does: "9" is "9.0"
    return version


def release_hash(version: str | None) -> dict[str, str] | None:
    """``{"full": "9.3", "major": "9", "minor": "3"}``."""
    if not version:
        return None
    parts = version.split(".")
    result = {"full": version, "major": parts[0]}
    if len(parts) > 1:
        result["minor"] = parts[1]
    return result


def _debian_release(debian_version: str | None) -> dict[str, str] | None:
    if not debian_version or not debian_version.strip():
        return None
    release = debian_version.strip()
    parts = release.split(".")
    result = {"full": release, "major": parts[0]}
    if len(parts) > 1:
        result["minor"] = re.sub(r"^0([1-9])", r"\1", parts[1])
    return result


@dataclass(frozen=True)
class RedHatRelease:
    """What ``/etc/redhat-release`` says, as Facter's RedHatRelease resolver reads it."""

    description: str
    distributor_id: str
    name: str
    version: str | None
    codename: str | None


def redhat_release(text: str) -> RedHatRelease | None:
    """``Rocky Linux release 9.3 (Blue Onyx)`` → id ``Rocky``, version ``9.3``, codename."""
    line = text.strip()
    if not line:
        return None
    parts = [part.strip() for part in line.split("release")]
    words = [word for word in parts[0].split() if word.lower() != "linux"]
    version_words = parts[1].split() if len(parts) > 1 else []
    codename = re.match(r".*release.*(\(.*\)).*", line)
    return RedHatRelease(
        description=line,
        distributor_id="".join(words),
        name="".join(words[0:2]),
        version=version_words[0] if version_words else None,
        codename=(codename.group(1).strip("()") or None) if codename else None,
    )


def _debian_codename(release: Mapping[str, str]) -> str | None:
    if release.get("version_codename"):
        return release["version_codename"]
    version = release.get("version")
    if not version:
        return None
    found = re.search(r"\((.*)\)$", version)
    if found and found.group(1):
        return found.group(1)
    words = re.search(r"[A-Za-z]+\s[A-Za-z]+", version)
    return words.group(0).split(" ")[0].lower() if words else None


def os_fact(
    release: Mapping[str, str],
    *,
    machine: str,
    debian_version: str | None = None,
    redhat: RedHatRelease | None = None,
    selinux: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``os`` fact, from ``/etc/os-release`` (:func:`os_release`), ``uname -m``, and
    ``/etc/debian_version`` or ``/etc/redhat-release`` where there is one."""
    tree = _hierarchy(release)
    debian, ubuntu, rhel = "debian" in tree, "ubuntu" in tree, "rhel" in tree
    name = _os_name(release["name"]) if release.get("name") else None
    if name is None and redhat is not None:
        name = redhat.name
    architecture = "i386" if re.search(r"i[3456]86|pentium", machine) else machine
    if debian and machine == "x86_64":
        architecture = "amd64"
    if ubuntu:
        version = _version_id(release)
        os_rel: dict[str, str] | None = {"full": version, "major": version} if version else None
    elif debian:
        os_rel = _debian_release(debian_version) or release_hash(_version_id(release))
    elif rhel:
        os_rel = release_hash((redhat.version if redhat else None) or _version_id(release))
    else:  # Facter's classes for Alpine, SLES, Photon... split the version likewise
        os_rel = release_hash(_version_id(release))
    if rhel:
        family = "RedHat"
        distro: dict[str, Any] = {}
        if redhat is not None:
            distro = {
                "codename": redhat.codename,
                "description": redhat.description,
                "id": redhat.distributor_id,
            }
    else:
        family = _family(release)
        distro = {
            "codename": _debian_codename(release),
            "description": release.get("pretty_name"),
            "id": release.get("id", "").capitalize() or None,
        }
    distro["release"] = dict(os_rel) if os_rel else None
    return _prune(
        {
            "architecture": architecture,
            "distro": distro,
            "family": family,
            "hardware": machine,
            "name": name,
            "release": os_rel,
            "selinux": dict(selinux) if selinux is not None else None,
        }
    )


def selinux_mount(mounts_text: str) -> str | None:
    """Where ``selinuxfs`` is mounted, from ``/proc/self/mounts``; None if it is not."""
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) > 2 and "selinuxfs" in line:
            return fields[1]
    return None


def selinux_fact(
    *, mounted: bool, config: str | None, enforce: str | None, policy_version: str | None
) -> dict[str, Any]:
    """``os.selinux``: enabled when selinuxfs is mounted and ``/etc/selinux/config`` has
    lines, as Facter decides."""
    lines = (config or "").splitlines()
    if not mounted or not lines:
        return {"enabled": False}
    result: dict[str, Any] = {"enabled": True}
    for line in lines:
        if line.startswith("SELINUX="):
            result["config_mode"] = line.split("=")[-1].strip()
        elif line.startswith("SELINUXTYPE="):
            result["config_policy"] = line.split("=")[-1].strip()
    enforced = (enforce or "").strip() == "1"
    result["enforced"] = enforced
    result["current_mode"] = "enforcing" if enforced else "permissive"
    if policy_version and policy_version.strip():
        result["policy_version"] = policy_version.strip()
    return result


# -- kernel ----------------------------------------------------------------------------


def kernel_facts(sysname: str, release: str) -> dict[str, str]:
    """``kernel``, ``kernelrelease``, ``kernelversion`` (``6.1.0``), ``kernelmajversion``."""
    numbers = re.findall(r"\d+", release)
    parts = release.split(".")
    return {
        "kernel": sysname,
        "kernelrelease": release,
        "kernelversion": ".".join(numbers[0:3]),
        "kernelmajversion": parts[0] if len(parts) <= 1 else f"{parts[0]}.{parts[1]}",
    }


# -- memory, processors, uptime, load ---------------------------------------------------


def _usage(total: int, available: int) -> dict[str, Any]:
    used = total - available
    return {
        "available": human_bytes(available),
        "available_bytes": available,
        "capacity": f"{used / total * 100:.2f}%",
        "total": human_bytes(total),
        "total_bytes": total,
        "used": human_bytes(used),
        "used_bytes": used,
    }


def memory(meminfo: str) -> dict[str, Any]:
    """``memory.system`` (available is ``MemAvailable``) and ``memory.swap`` (only when
    there is swap), from ``/proc/meminfo``."""
    kib: dict[str, int] = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isascii() and value[0].isdigit():
            kib[key.strip()] = int(value[0]) * 1024
    result: dict[str, Any] = {}
    total = kib.get("MemTotal", 0)
    if total > 0:
        available = kib.get("MemAvailable")
        if available is None:
            available = kib.get("MemFree", 0) + kib.get("Buffers", 0) + kib.get("Cached", 0)
        result["system"] = _usage(total, available)
    swap = kib.get("SwapTotal", 0)
    if swap > 0:
        result["swap"] = _usage(swap, kib.get("SwapFree", 0))
    return result


_X86_LEVELS = (
    ("x86_64-v1", {"cmov", "cx8", "fpu", "fxsr", "lm", "mmx", "syscall", "sse2"}),
    ("x86_64-v2", {"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"}),
    ("x86_64-v3", {"abm", "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"}),
    ("x86_64-v4", {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)


def processors(cpuinfo: str, *, machine: str, package_ids: Iterable[str] = ()) -> dict[str, Any]:
    """``processors`` from ``/proc/cpuinfo``.

    ``isa`` is the machine (Facter runs ``uname -p``, which says ``unknown`` on Debian);
    ``cores`` and ``threads`` come from ``cpu cores`` and ``siblings`` rather than
    ``lscpu``; ``package_ids`` (``/sys/.../topology/physical_package_id``) count the
    sockets when cpuinfo has no ``physical id``.
    """
    count = 0
    models: list[str] = []
    physical: set[str] = set()
    speed = 0
    flags: set[str] = set()
    cores = siblings = None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            count += 1
        elif key in ("model name", "cpu"):
            models.append(value)
        elif key == "physical id":
            physical.add(value)
        elif key in ("cpu MHz", "clock"):
            digits = re.match(r"\d+", value)
            if digits:
                speed = int(digits.group(0)) * 1_000_000
        elif key == "flags":
            flags.update(value.split())
        elif key == "cpu cores" and cores is None and value.isascii() and value.isdigit():
            cores = int(value)
        elif key == "siblings" and siblings is None and value.isascii() and value.isdigit():
            siblings = int(value)
    extensions = {machine}
    if machine == "x86_64":
        extensions.update(level for level, needs in _X86_LEVELS if needs <= flags)
    result: dict[str, Any] = {
        "count": count,
        "extensions": sorted(extensions),
        "isa": machine,
        "models": models,
        "physicalcount": len(physical) or len(set(package_ids)),
        "speed": human_hertz(speed),
    }
    if cores:
        result["cores"] = cores
        if siblings:
            result["threads"] = max(siblings // cores, 1)
    return _prune(result)


def system_uptime(proc_uptime: str) -> dict[str, Any]:
    """``system_uptime`` from ``/proc/uptime``: seconds, hours, days, ``"3:05 hours"``."""
    seconds = int(float(proc_uptime.split()[0]))
    hours = seconds // 3600
    days = hours // 24
    minutes = (seconds // 60) % 60
    if days == 0:
        text = f"{hours}:{minutes:02d} hours"
    elif days == 1:
        text = "1 day"
    else:
        text = f"{days} days"
    return {"days": days, "hours": hours, "seconds": seconds, "uptime": text}


def load_averages(loadavg: str) -> dict[str, float]:
    """``load_averages`` from ``/proc/loadavg``."""
    one, five, fifteen = (float(value) for value in loadavg.split()[0:3])
    return {"1m": one, "5m": five, "15m": fifteen}


# -- storage ----------------------------------------------------------------------------


def filesystems(proc_filesystems: str) -> str:
    """The block file systems the kernel knows (``nodev`` ones and fuseblk left out),
    sorted, comma-separated, from ``/proc/filesystems``."""
    names = []
    for line in proc_filesystems.splitlines():
        tokens = line.split()
        if len(tokens) == 1 and tokens[0] != "fuseblk":
            names.append(tokens[0])
    return ",".join(sorted(names))


def disks(found: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """``disks`` from what ``/sys/block/<disk>`` says of each disk that has a device:
    ``size`` (512-byte sectors), ``model``, ``vendor``, ``rotational``, ``serial``."""
    result: dict[str, Any] = {}
    for name, files in found.items():
        disk: dict[str, Any] = {}
        for key in ("model", "vendor", "serial"):
            if files.get(key, "").strip():
                disk[key] = files[key].strip()
        size = files.get("size", "").strip()
        if size.isascii() and size.isdigit():
            disk["size_bytes"] = int(size) * 512
            disk["size"] = human_bytes(disk["size_bytes"])
        rotational = files.get("rotational", "").strip()
        if rotational:
            disk["type"] = "ssd" if rotational == "0" else "hdd"
        result[name] = dict(sorted(disk.items()))
    return result


@dataclass(frozen=True)
class Mount:
    device: str
    path: str
    filesystem: str
    options: tuple[str, ...]


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts(proc_mounts: str) -> list[Mount]:
    """The mounts Facter reports, from ``/proc/mounts``: not those under ``/proc`` or
    ``/sys`` (unless tmpfs), nor autofs triggers."""
    found = []
    for line in proc_mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, path, fstype, options = (_unescape_mount(field) for field in fields[0:4])
        if (re.match(r"^/(proc|sys)", path) and fstype != "tmpfs") or fstype == "autofs":
            continue
        found.append(Mount(device, path, fstype, tuple(o.strip() for o in options.split(","))))
    return found


def mountpoint(mount: Mount, *, size: int, available: int, free: int) -> dict[str, Any]:
    """One entry of ``mountpoints``: sizes from ``statvfs`` (bytes), as Facter computes."""
    used = size - free
    return {
        "available": human_bytes(available),
        "available_bytes": available,
        "capacity": capacity(used, used + available),
        "device": mount.device,
        "filesystem": mount.filesystem,
        "options": list(mount.options),
        "size": human_bytes(size),
        "size_bytes": size,
        "used": human_bytes(used),
        "used_bytes": used,
    }


def root_device(cmdline: str) -> str | None:
    """The ``root=`` of the kernel command line, which ``/dev/root`` stands for."""
    found = re.search(r"root=(\S+)", cmdline)
    return found.group(1) if found else None


# -- identity, dmi, virtualization -----------------------------------------------------


_CHASSIS = (
    "Other", None, "Desktop", "Low Profile Desktop", "Pizza Box", "Mini Tower", "Tower",
    "Portable", "Laptop", "Notebook", "Hand Held", "Docking Station", "All in One",
    "Sub Notebook", "Space-Saving", "Lunch Box", "Main System Chassis", "Expansion Chassis",
    "SubChassis", "Bus Expansion Chassis", "Peripheral Chassis", "Storage Chassis",
    "Rack Mount Chassis", "Sealed-Case PC", "Multi-system", "CompactPCI", "AdvancedTCA",
    "Blade", "Blade Enclosure", "Tablet", "Convertible", "Detachable", "IoT Gateway",
    "Embedded PC", "Mini PC", "Stick PC",
)  # fmt: skip


def dmi(ids: Mapping[str, str]) -> dict[str, Any]:
    """``dmi`` from the files of ``/sys/class/dmi/id`` (``bios_vendor``, ``product_name``...)."""
    value = {key: text.strip() for key, text in ids.items() if text and text.strip()}
    chassis = value.get("chassis_type", "")
    chassis_name = None
    if chassis.isascii() and chassis.isdigit() and 0 < int(chassis) <= len(_CHASSIS):
        chassis_name = _CHASSIS[int(chassis) - 1]
    return _prune(
        {
            "bios": {
                "release_date": value.get("bios_date"),
                "vendor": value.get("bios_vendor"),
                "version": value.get("bios_version"),
            },
            "board": {
                "asset_tag": value.get("board_asset_tag"),
                "manufacturer": value.get("board_vendor"),
                "product": value.get("board_name"),
                "serial_number": value.get("board_serial"),
            },
            "chassis": {"asset_tag": value.get("chassis_asset_tag"), "type": chassis_name},
            "manufacturer": value.get("sys_vendor"),
            "product": {
                "name": value.get("product_name"),
                "serial_number": value.get("product_serial"),
                "uuid": value.get("product_uuid"),
                "version": value.get("product_version"),
            },
        }
    )


@dataclass(frozen=True)
class VirtualProbes:
    """What the virtualization facts are decided from: cheap files, no commands.

    Facter also asks ``virt-what`` and ``lspci``; the PCI vendors of
    ``/sys/bus/pci/devices`` and the kernel's clock sources stand in for them.
    """

    dockerenv: bool = False
    cgroup: str | None = None  # /proc/1/cgroup
    container: str | None = None  # the container variable of pid 1's environment
    machine_id: str | None = None
    bios_vendor: str | None = None
    product_name: str | None = None
    sys_vendor: str | None = None
    openvz_entries: int | None = None  # entries in /proc/vz, None if there is none
    cloudlinux_lve: bool = False  # /proc/lve/list, which looks like OpenVZ
    status: str | None = None  # /proc/self/status
    xen_evtchn: bool = False  # /dev/xen/evtchn: a Xen dom0
    xen_guest: bool = False  # /proc/xen, or a real /dev/xvda1
    xen_capabilities: str | None = None
    pci_vendors: tuple[str, ...] = ()  # "0x1af4", ...
    clocksources: str | None = None


_HYPERVISORS = (
    ("VMware", "vmware"),
    ("VirtualBox", "virtualbox"),
    ("Parallels", "parallels"),
    ("KVM", "kvm"),
    ("Virtual Machine", "hyperv"),
    ("RHEV Hypervisor", "rhev"),
    ("oVirt Node", "ovirt"),
    ("HVM domU", "xenhvm"),
    ("Bochs", "bochs"),
    ("OpenBSD", "vmm"),
    ("BHYVE", "bhyve"),
)
_PCI_VENDORS = {
    "0x80ee": "virtualbox",
    "0x5853": "xenhvm",
    "0x1414": "hyperv",
    "0x1ae0": "gce",
    "0x15ad": "vmware",
    "0x1ab8": "parallels",
    "0x1af4": "kvm",  # virtio
}
_CLOCKSOURCES = {"kvm-clock": "kvm", "hyperv_clocksource_tsc_page": "hyperv", "xen": "xenhvm"}
PHYSICAL = frozenset(
    {"physical", "xen0", "vmware_server", "vmware_workstation", "openvzhn", "vserver_host"}
)


def _container(probes: VirtualProbes) -> tuple[str, dict[str, Any]] | None:
    cgroup = probes.cgroup
    if cgroup is not None:
        docker = re.search(r"docker/(?P<id>.+)", cgroup)
        lxc = re.search(r"(?:^|:)/lxc(?:/|\.payload\.)(?P<name>[^/\n]+)", cgroup, re.MULTILINE)
        if probes.dockerenv:
            return "docker", {"id": docker.group("id")} if docker else {}
        if docker:
            return "docker", {"id": docker.group("id")}
        if lxc:
            return "lxc", {"name": lxc.group("name")}
    known = {"lxc", "lxc-virtwhat", "podman", "crio", "systemd-nspawn"}
    if probes.container in known:
        if probes.container == "systemd-nspawn":
            machine = (probes.machine_id or "").strip()
            return "systemd_nspawn", {"id": machine} if machine else {}
        return probes.container, {}
    return None


def environ_value(environ: bytes, name: str) -> str | None:
    """One variable of a ``/proc/<pid>/environ``."""
    prefix = name.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode("utf-8", "replace")
    return None


def _status_field(status: str | None, names: tuple[str, ...]) -> str | None:
    for line in (status or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].rstrip(":") in names:
            return parts[1]
    return None


def _machine(probes: VirtualProbes) -> str | None:
    """The hypervisor under this node, container or not (Facter's order after its
    container check)."""
    bios = probes.bios_vendor or ""
    if "Google" in bios:
        return "gce"
    if probes.openvz_entries and not probes.cloudlinux_lve:
        env = _status_field(probes.status, ("envID",))
        if env is not None:
            return "openvzhn" if env == "0" else "openvzve"
    vxid = _status_field(probes.status, ("s_context", "VxID"))
    if vxid is not None:
        return "vserver_host" if vxid == "0" else "vserver"
    if probes.xen_evtchn:
        return "xen0"
    if probes.xen_guest:
        return "xenu"
    if "Amazon EC2" in bios:
        return "kvm"
    for marker, name in _HYPERVISORS:
        if probes.product_name and marker in probes.product_name:
            return name
    for vendor in probes.pci_vendors:
        if vendor.strip().lower() in _PCI_VENDORS:
            return _PCI_VENDORS[vendor.strip().lower()]
    for source in (probes.clocksources or "").split():
        if source in _CLOCKSOURCES:
            return _CLOCKSOURCES[source]
    return None


def virtualization(probes: VirtualProbes) -> dict[str, Any]:
    """``virtual``, ``is_virtual`` and ``hypervisors``."""
    container = _container(probes)
    machine = _machine(probes)
    virtual = container[0] if container else machine or "physical"
    hypervisors: dict[str, Any] = {}
    if container:
        hypervisors[container[0].replace("-", "_")] = container[1]
    if machine == "kvm":
        vendor = probes.sys_vendor or ""
        provider = (
            {"google": True}
            if vendor == "Google"
            else {"openstack": True}
            if vendor.startswith("OpenStack")
            else {"amazon": True}
            if vendor.startswith("Amazon")
            else {}
        )
        hypervisors["kvm"] = provider
    elif machine in ("xen0", "xenu", "xenhvm"):
        privileged = machine == "xen0" or (probes.xen_capabilities or "").strip() == "control_d"
        hypervisors["xen"] = {"context": "hvm" if machine == "xenhvm" else "pv"}
        hypervisors["xen"]["privileged"] = privileged
    elif machine in ("openvzhn", "openvzve"):
        env = _status_field(probes.status, ("envID",))
        hypervisors["openvz"] = {"host": machine == "openvzhn", "id": int(env or 0)}
    elif machine == "hyperv":
        hypervisors["hyperv"] = {}
    elif machine is not None and machine != "gce":
        hypervisors[machine] = {}
    return {
        "hypervisors": hypervisors,
        "is_virtual": virtual not in PHYSICAL,
        "virtual": virtual,
    }


# -- helpers ----------------------------------------------------------------------------


def _prune(value: dict[str, Any]) -> dict[str, Any]:
    """The dict without None values and without empty dicts that pruning left."""
    result: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            item = _prune(item)
            if not item:
                continue
        if item is not None:
            result[key] = item
    return result
