"""Reading a node's facts: one small read per fact, each handing what it read to a pure
parse of :mod:`.parse` or :mod:`.network`.

Every read is fault tolerant: a missing file, a refused permission or an odd line drops
that fact (logged at debug level), never the whole set. No read runs a command, except
``ip -j addr`` where the kernel's netlink socket cannot be used. When Facter is
installed, :func:`facter_json` asks it instead (see :func:`core`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from podium.agent.facter import network, parse
from podium.agent.facter.external import BrokenFact, run

log = logging.getLogger(__name__)

FACTER_BIN: Final = Path("/opt/puppetlabs/bin/facter")
FACTER_TIMEOUT: Final = 60.0
_FACTER_MAX_BYTES: Final = 16 * 1024 * 1024
# statvfs on these may hang for as long as their server is away: their sizes are not read.
_REMOTE_FILESYSTEMS: Final = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre",
     "9p", "davfs", "fuse"}
)  # fmt: skip


def _read(path: str | Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as stream:
        return stream.read()


def _maybe(path: str | Path) -> str | None:
    try:
        return _read(path)
    except OSError:
        return None


# -- one read per fact ------------------------------------------------------------------


def read_os() -> dict[str, Any]:
    text = _maybe("/etc/os-release")
    if text is None:
        text = _read("/usr/lib/os-release")
    mounts = _maybe("/proc/self/mounts") or ""
    selinuxfs = parse.selinux_mount(mounts)
    selinux = parse.selinux_fact(
        mounted=selinuxfs is not None,
        config=_maybe("/etc/selinux/config") if selinuxfs else None,
        enforce=_maybe(f"{selinuxfs}/enforce") if selinuxfs else None,
        policy_version=_maybe(f"{selinuxfs}/policyvers") if selinuxfs else None,
    )
    redhat = _maybe("/etc/redhat-release")
    value = parse.os_fact(
        parse.os_release(text),
        machine=os.uname().machine,
        debian_version=_maybe("/etc/debian_version"),
        redhat=parse.redhat_release(redhat) if redhat else None,
        selinux=selinux,
    )
    return {"os": value}


def read_kernel() -> dict[str, Any]:
    uname = os.uname()
    return parse.kernel_facts(uname.sysname, uname.release)


def read_memory() -> dict[str, Any]:
    return {"memory": parse.memory(_read("/proc/meminfo"))}


def read_processors() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    packages: list[str] = []
    if "physical id" not in cpuinfo:
        base = Path("/sys/devices/system/cpu")
        for cpu in base.glob("cpu[0-9]*"):
            found = _maybe(cpu / "topology" / "physical_package_id")
            if found is not None:
                packages.append(found.strip())
    value = parse.processors(cpuinfo, machine=os.uname().machine, package_ids=packages)
    return {"processors": value}


def read_uptime() -> dict[str, Any]:
    return {"system_uptime": parse.system_uptime(_read("/proc/uptime"))}


def read_load_averages() -> dict[str, Any]:
    return {"load_averages": parse.load_averages(_read("/proc/loadavg"))}


def read_timezone() -> dict[str, Any]:
    return {"timezone": time.strftime("%Z")}


def read_identity() -> dict[str, Any]:
    import grp
    import pwd

    uid = os.getuid()
    value: dict[str, Any] = {"uid": uid, "gid": os.getgid(), "privileged": uid == 0}
    try:
        entry = pwd.getpwuid(uid)
        value.update(user=entry.pw_name, gid=entry.pw_gid)
        value["group"] = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:  # a uid without a passwd entry, as in some containers
        pass
    return {"identity": value}


def read_path() -> dict[str, Any]:
    return {"path": os.environ["PATH"]}


def _netlink_dump(kind: int) -> bytes:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as sock:  # NETLINK_ROUTE
        sock.settimeout(2.0)
        sock.bind((0, 0))
        sock.sendall(network.dump_request(kind))
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            chunks.append(chunk)
            if not chunk or network.dump_done(chunk):
                return b"".join(chunks)


def read_links() -> list[dict[str, Any]]:
    """The interfaces, from netlink; from ``ip -j addr`` where netlink fails."""
    try:
        links = network.decode_netlink(
            _netlink_dump(network.RTM_GETLINK), _netlink_dump(network.RTM_GETADDR)
        )
        if links:
            return links
    except (OSError, AttributeError) as exc:  # AttributeError: no AF_NETLINK here
        log.debug("netlink failed (%s); asking ip", exc)
    ip = shutil.which("ip") or "/sbin/ip"
    try:
        output = run([ip, "-j", "addr"], timeout=5.0, max_bytes=_FACTER_MAX_BYTES)
    except BrokenFact as exc:
        raise OSError(f"ip -j addr: {exc}") from exc
    value = json.loads(output)
    if not isinstance(value, list):
        raise ValueError("ip -j addr did not print a list")
    return value


def read_names() -> dict[str, str]:
    # As Facter does, a host name without a domain is looked up (getaddrinfo): that may
    # wait on DNS, in the worker thread that collects the facts.
    hostname = socket.gethostname()
    canonical = address = None
    if "." not in hostname:
        try:
            infos = socket.getaddrinfo(
                hostname, 0, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_CANONNAME
            )
            canonical, address = infos[0][3], str(infos[0][4][0])
        except (OSError, IndexError) as exc:
            log.debug("no canonical name for %s: %s", hostname, exc)
    return network.hostnames(
        hostname,
        canonical=canonical,
        canonical_address=address,
        resolv_conf=_maybe("/etc/resolv.conf"),
    )


def _sysfs_net(names: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name in names:
        base = Path("/sys/class/net") / name
        entry: dict[str, Any] = {"physical": (base / "device").exists()}
        if entry["physical"]:
            speed = _maybe(base / "speed") or ""  # EINVAL while the link is down
            digits = speed.strip().lstrip("-")
            if digits.isascii() and digits.isdigit():
                entry["speed"] = int(speed)
            duplex = _maybe(base / "duplex")
            if duplex is not None and duplex.strip():
                entry["duplex"] = duplex.strip()
        found[name] = entry
    return found


def read_networking() -> dict[str, Any]:
    links = read_links()
    try:
        names = read_names()
    except OSError as exc:
        log.debug("no host name: %s", exc)
        names = {}
    value = network.networking(
        links,
        route=_maybe("/proc/net/route"),
        names=names,
        sysfs=_sysfs_net([str(link.get("ifname")) for link in links]),
    )
    return {"networking": value}


def read_disks() -> dict[str, Any]:
    found: dict[str, dict[str, str]] = {}
    for name in sorted(os.listdir("/sys/block")):
        base = Path("/sys/block") / name
        if not os.access(base / "device", os.R_OK):
            continue  # loop, ram, zram: no device behind
        files = {
            "size": base / "size",
            "model": base / "device" / "model",
            "vendor": base / "device" / "vendor",
            "serial": base / "device" / "serial",
            "rotational": base / "queue" / "rotational",
        }
        found[name] = {key: text for key, path in files.items() if (text := _maybe(path))}
    value = parse.disks(found)
    return {"disks": value} if value else {}


def _root_device() -> str | None:
    root = parse.root_device(_maybe("/proc/cmdline") or "")
    if root and "=" in root:  # UUID=..., PARTUUID=...: Facter asks blkid; udev has links
        kind, _, ident = root.partition("=")
        link = Path("/dev/disk") / f"by-{kind.lower()}" / ident
        try:
            return str(link.resolve(strict=True))
        except OSError:
            return root
    return root


def read_mountpoints() -> dict[str, Any]:
    value: dict[str, Any] = {}
    root = None
    for mount in parse.mounts(_read("/proc/mounts")):
        if mount.device == "/dev/root":
            root = root or _root_device()
            if root:
                mount = parse.Mount(root, mount.path, mount.filesystem, mount.options)
        if mount.filesystem in _REMOTE_FILESYSTEMS or mount.filesystem.startswith("fuse."):
            value[mount.path] = {
                "device": mount.device,
                "filesystem": mount.filesystem,
                "options": list(mount.options),
            }
            continue
        try:
            stats = os.statvfs(mount.path)
            size, available, free = (
                stats.f_blocks * stats.f_frsize,
                stats.f_bavail * stats.f_frsize,
                stats.f_bfree * stats.f_frsize,
            )
        except OSError as exc:
            log.debug("no sizes for %s: %s", mount.path, exc)
            size = available = free = 0
        value[mount.path] = parse.mountpoint(mount, size=size, available=available, free=free)
    return {"mountpoints": value}


def read_filesystems() -> dict[str, Any]:
    return {"filesystems": parse.filesystems(_read("/proc/filesystems"))}


_DMI_FILES = (
    "bios_date", "bios_vendor", "bios_version", "board_asset_tag", "board_vendor",
    "board_name", "board_serial", "chassis_asset_tag", "chassis_type", "sys_vendor",
    "product_name", "product_serial", "product_uuid", "product_version",
)  # fmt: skip


def _dmi_ids(names: tuple[str, ...] = _DMI_FILES) -> dict[str, str]:
    base = Path("/sys/class/dmi/id")
    return {name: text for name in names if (text := _maybe(base / name)) is not None}


def read_dmi() -> dict[str, Any]:
    value = parse.dmi(_dmi_ids())
    return {"dmi": value} if value else {}


def _exists(path: str) -> bool:
    return os.path.exists(path)


def read_virtual() -> dict[str, Any]:
    ids = {k: v.strip() for k, v in _dmi_ids(("bios_vendor", "product_name", "sys_vendor")).items()}
    environ = None
    try:
        with open("/proc/1/environ", "rb") as stream:
            environ = stream.read()
    except OSError:  # only root may read it
        pass
    try:
        openvz: int | None = len(os.listdir("/proc/vz"))
    except OSError:
        openvz = None
    vendors = []
    try:
        for device in sorted(os.listdir("/sys/bus/pci/devices")):
            vendor = _maybe(Path("/sys/bus/pci/devices") / device / "vendor")
            if vendor:
                vendors.append(vendor.strip())
    except OSError:
        pass
    probes = parse.VirtualProbes(
        dockerenv=_exists("/.dockerenv"),
        cgroup=_maybe("/proc/1/cgroup"),
        container=parse.environ_value(environ, "container") if environ else None,
        machine_id=_maybe("/etc/machine-id"),
        bios_vendor=ids.get("bios_vendor"),
        product_name=ids.get("product_name"),
        sys_vendor=ids.get("sys_vendor"),
        openvz_entries=openvz,
        cloudlinux_lve=os.path.isfile("/proc/lve/list"),
        status=_maybe("/proc/self/status"),
        xen_evtchn=_exists("/dev/xen/evtchn"),
        xen_guest=_exists("/proc/xen")
        or (_exists("/dev/xvda1") and not os.path.islink("/dev/xvda1")),
        xen_capabilities=_maybe("/proc/xen/capabilities"),
        pci_vendors=tuple(vendors),
        clocksources=_maybe("/sys/devices/system/clocksource/clocksource0/available_clocksource"),
    )
    value = parse.virtualization(probes)
    if not value["hypervisors"]:
        del value["hypervisors"]
    return value


READS: Final[tuple[tuple[str, Callable[[], Mapping[str, Any]]], ...]] = (
    ("os", read_os),
    ("kernel", read_kernel),
    ("memory", read_memory),
    ("processors", read_processors),
    ("system_uptime", read_uptime),
    ("load_averages", read_load_averages),
    ("timezone", read_timezone),
    ("identity", read_identity),
    ("path", read_path),
    ("networking", read_networking),
    ("disks", read_disks),
    ("mountpoints", read_mountpoints),
    ("filesystems", read_filesystems),
    ("dmi", read_dmi),
    ("virtual", read_virtual),
)


def builtin(
    reads: tuple[tuple[str, Callable[[], Mapping[str, Any]]], ...] = READS,
) -> dict[str, Any]:
    """Every fact the built-in reads can find; a read that fails only drops its facts."""
    facts: dict[str, Any] = {}
    for name, read in reads:
        try:
            facts.update(read())
        except Exception as exc:
            log.debug("no %s fact: %s", name, exc, exc_info=True)
    return facts


# -- Facter -----------------------------------------------------------------------------


def find_facter() -> str | None:
    """Facter's command, on PATH or where puppet-agent packages put it."""
    found = shutil.which("facter")
    if found:
        return found
    return str(FACTER_BIN) if os.access(FACTER_BIN, os.X_OK) else None


def facter_json(facter: str, *, timeout: float = FACTER_TIMEOUT) -> dict[str, Any] | None:
    """What ``facter --json`` says; None (with a warning) when it fails."""
    try:
        output = run([facter, "--json"], timeout=timeout, max_bytes=_FACTER_MAX_BYTES)
        value = json.loads(output)
    except (BrokenFact, ValueError) as exc:
        log.warning("%s --json failed (%s); using the built-in facts", facter, exc)
        return None
    if not isinstance(value, dict):
        log.warning("%s --json printed no object; using the built-in facts", facter)
        return None
    return value


def core(*, facter: str | None = None, use_facter: bool = True) -> dict[str, Any]:
    """The core facts: Facter's when it is installed (or ``facter`` names it) and works,
    else the built-in ones."""
    if use_facter:
        facter = facter or find_facter()
        if facter:
            found = facter_json(facter)
            if found is not None:
                return found
    return builtin()
