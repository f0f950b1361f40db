"""What an agent reports about its node: a few cheap core facts plus a local file, and
the features it can run tasks with."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from podium import __version__

log = logging.getLogger(__name__)

# Where puppet-agent packages put the puppet command, often not on PATH.
PUPPET_BIN: Final = Path("/opt/puppetlabs/bin/puppet")


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k: v.strip().strip('"') for k, v in pairs}


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def core_facts(certname: str) -> dict[str, Any]:
    release = _os_release()
    family = {"debian": "Debian", "ubuntu": "Debian", "rhel": "RedHat", "fedora": "RedHat"}
    like = (release.get("ID_LIKE", "") + " " + release.get("ID", "")).split()
    uname = platform.uname()
    return {
        "certname": certname,
        "hostname": socket.gethostname().split(".")[0],
        "fqdn": socket.getfqdn(),
        "kernel": uname.system,
        "kernelrelease": uname.release,
        "os": {
            "name": release.get("NAME", uname.system),
            "family": next((family[i] for i in like if i in family), uname.system),
            "release": {"full": release.get("VERSION_ID", uname.release)},
            "architecture": uname.machine,
        },
        "processors": {"count": os.cpu_count() or 1},
        "memory": {"system": {"total_bytes": _memory_bytes()}},
        "podium_agent_version": __version__,
    }


def gather(certname: str, facts_file: Path | None) -> dict[str, Any]:
    """Core facts, overlaid with the JSON object in ``facts_file`` if there is one."""
    facts = core_facts(certname)
    if facts_file is None or not facts_file.exists():
        return facts
    try:
        extra = json.loads(facts_file.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring facts file %s: %s", facts_file, exc)
        return facts
    if isinstance(extra, dict):
        facts.update(extra)
    else:
        log.warning("ignoring facts file %s: it must hold a JSON object", facts_file)
    return facts


def features(
    *,
    which: Callable[[str], str | None] = shutil.which,
    exists: Callable[[Path], bool] = Path.exists,
    posix: bool = os.name == "posix",
) -> list[str]:
    """What this node can run tasks with, sorted, as Bolt names the features that task
    implementations require: ``shell``, ``powershell``, ``python``, ``puppet-agent``.

    Blocking (a few PATH look-ups): the agent works it out once, at start.
    """
    found = set()
    if posix:  # /bin/sh is POSIX's
        found.add("shell")
    if which("pwsh"):
        found.add("powershell")
    if which("python3"):
        found.add("python")
    if which("puppet") or exists(PUPPET_BIN):
        found.add("puppet-agent")
    return sorted(found)
