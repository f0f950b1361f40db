"""The agent's settings: a TOML file, then command-line flags, then defaults.

The enrollment token is a secret: it is read from ``enrollment_token_file`` when
enrolling, or taken from ``PODIUM_ENROLLMENT_TOKEN``; never from a flag or this file.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from podium.config import env
from podium.errors import ConfigError
from podium.protocol.names import is_certname

SYSTEM_FACTS_DIR = Path("/etc/podium/facts.d")


def _default_vardir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/podium-agent")
    return Path.home() / ".local" / "share" / "podium-agent"


@dataclass(frozen=True)
class AgentConfig:
    """Everything an agent needs to enroll, connect and run actions."""

    certname: str
    server_url: str
    brokers: tuple[str, ...]
    vardir: Path = field(default_factory=_default_vardir)
    cacert: Path | None = None
    # A file holding the token that lets the CA sign this node at once (mode 0600).
    enrollment_token_file: Path | None = None
    # PODIUM_ENROLLMENT_TOKEN, used when no file is given; not a setting of the file.
    enrollment_token: str | None = field(default=None, repr=False)
    facts_file: Path | None = None
    # External facts folders; None: <vardir>/facts.d, then /etc/podium/facts.d (see facts_dirs).
    factsdir: tuple[Path, ...] | None = None
    facts_interval: float = 1800.0  # seconds between checks for changed facts
    # Puppet: the command (looked up on PATH when a run starts) and, when set, a folder
    # under which Puppet gets all its folders (confdir, vardir, ...); None: its defaults.
    puppet_bin: str = "puppet"
    puppet_root: Path | None = None
    # Limits
    concurrency: int = 8
    spool_ttl: timedelta = timedelta(days=14)  # acknowledged results are kept this long
    cache_ttl: timedelta = timedelta(days=14)  # task files unused this long are removed
    max_message_bytes: int = 1024 * 1024
    # Timeouts
    connect_timeout: float = 10.0
    ping_interval: float = 60.0
    ping_timeout: float = 30.0
    backoff_base: float = 1.0
    backoff_cap: float = 32.0
    waitforcert: float = 2.0
    fetch_timeout: float = 300.0  # how long a task file download is retried

    @property
    def facts_dirs(self) -> tuple[Path, ...]:
        """Where external facts are read, a later folder winning over an earlier one."""
        if self.factsdir is not None:
            return self.factsdir
        return (self.vardir / "facts.d", SYSTEM_FACTS_DIR)

    @property
    def ssldir(self) -> Path:
        return self.vardir / "ssl"

    @property
    def spooldir(self) -> Path:
        return self.vardir / "spool"

    @property
    def cachedir(self) -> Path:
        return self.vardir / "tasks-cache"

    @property
    def cert_path(self) -> Path:
        return self.ssldir / "certs" / f"{self.certname}.pem"

    @property
    def key_path(self) -> Path:
        return self.ssldir / "private_keys" / f"{self.certname}.pem"

    @property
    def ca_path(self) -> Path:
        return self.cacert or self.ssldir / "certs" / "ca.pem"


_DURATIONS = {"spool_ttl", "cache_ttl"}  # days in the file
_PATHS = {"vardir", "cacert", "enrollment_token_file", "facts_file", "puppet_root"}
_FROM_ENVIRONMENT = {"enrollment_token"}


def load(path: Path | None, overrides: dict[str, Any], *, connection: bool = True) -> AgentConfig:
    """Merge the TOML file at ``path`` (if any) with ``overrides`` (flags that were set).

    ``connection=False`` does not require ``server_url`` and ``brokers``, for commands
    that only read the node (``podium facts``).
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values.update(tomllib.loads(path.read_text()))
        except OSError as exc:
            raise ConfigError(f"cannot read agent config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"agent config {path} is not valid TOML: {exc}") from exc
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "enrollment_token" in values:
        raise ConfigError(
            "the agent no longer takes enrollment_token in its settings, where a secret is "
            "too easily shown: put the token in a file (mode 0600) and name it with "
            "enrollment_token_file (--enrollment-token-file), or set PODIUM_ENROLLMENT_TOKEN"
        )
    known = {f.name for f in fields(AgentConfig)} - _FROM_ENVIRONMENT
    unknown = values.keys() - known
    if unknown:
        raise ConfigError(
            f"unknown agent setting(s): {', '.join(sorted(unknown))}; "
            f"known settings are {', '.join(sorted(known))}"
        )
    values.setdefault("certname", socket.getfqdn().lower())
    required = (("server_url", "--server-url"), ("brokers", "--broker")) if connection else ()
    values.setdefault("server_url", "")
    values.setdefault("brokers", ())
    for name, flag in required:
        if not values.get(name):
            raise ConfigError(f"the agent needs {name!r}: give {flag} or set it in the config file")
    if isinstance(values["brokers"], str):
        values["brokers"] = [values["brokers"]]
    values["brokers"] = tuple(values["brokers"])
    for name in _PATHS & values.keys():
        values[name] = Path(values[name])
    for name in _DURATIONS & values.keys():
        values[name] = _days(name, values[name])
    if values.get("factsdir") is not None:
        values["factsdir"] = _folders("factsdir", values["factsdir"])
    values["enrollment_token"] = (env("ENROLLMENT_TOKEN") or "").strip() or None
    config = AgentConfig(**values)
    if not is_certname(config.certname):
        raise ConfigError(
            f"certname {config.certname!r} is not valid: use lowercase letters, digits, '.', '-'"
        )
    if config.concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    interval = config.facts_interval
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise ConfigError(f"facts_interval is a number of seconds greater than 0, not {interval!r}")
    return config


def _folders(name: str, value: object) -> tuple[Path, ...]:
    if isinstance(value, str | Path):
        return (Path(value),)
    if isinstance(value, list | tuple) and all(isinstance(item, str | Path) for item in value):
        return tuple(Path(item) for item in value)
    raise ConfigError(f"{name} is a folder or a list of folders, not {value!r}")


def _days(name: str, value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return timedelta(days=value)
    raise ConfigError(f"{name} is a number of days greater than 0, not {value!r}")
