"""Settings read from the environment, in one place, with the ``PODIUM_`` prefix."""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "PODIUM_"


def env(name: str, default: str | None = None) -> str | None:
    """The value of ``PODIUM_<name>``, or ``default``."""
    return os.environ.get(PREFIX + name, default)


def default_datadir() -> Path:
    """Where a server keeps its database, CA and code unless told otherwise."""
    configured = env("DATADIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/podium")
    return Path.home() / ".local" / "share" / "podium"


def default_cadir() -> Path:
    configured = env("CADIR")
    return Path(configured) if configured else default_datadir() / "ca"
