"""The server's settings: flags, then ``PODIUM_*`` environment variables, then defaults."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from podium.config import default_datadir, env
from podium.server.limits import byte_size


def _default_certname() -> str:
    return socket.getfqdn().lower() or "podium-server"


@dataclass(frozen=True)
class ServerSettings:
    """Where the server keeps its state and where it listens."""

    datadir: Path = field(default_factory=default_datadir)
    database_url: str | None = None  # default: SQLite in datadir
    codedir: Path | None = None  # default: datadir/code, else the built-in code
    # $basemodulepath of every environment; default: <codedir>/modules
    basemodulepath: tuple[Path, ...] = ()
    certname: str = field(default_factory=_default_certname)
    host: str = "127.0.0.1"
    port: int = 8143
    # The embedded broker; give `brokers` to use standalone ones instead.
    broker_host: str = "127.0.0.1"
    broker_port: int = 8142
    brokers: tuple[str, ...] = ()
    dns_alt_names: tuple[str, ...] = ("localhost", "127.0.0.1")
    autosign: tuple[str, ...] = ()
    # Enrollment tokens: PODIUM_AUTOSIGN_TOKENS, and files of one token a line (0600).
    autosign_tokens: tuple[str, ...] = field(default=(), repr=False)
    autosign_token_files: tuple[Path, ...] = ()
    # Access: certificates (from this CA) that may use the PuppetDB API without a token,
    # a site's Puppet Servers, whose PuppetDB terminus sends none.
    puppetdb_clients: tuple[str, ...] = ()
    # Timeouts
    # A node whose agent drops during a run is given up on (errored) after this.
    reconnect_grace: float = 300.0
    # A task run's timeout on a node when the job sets none (PE's default too).
    task_timeout: float = 2400.0
    # An agent that has not accepted a request after this is sent it again, then given up.
    answer_timeout: float = 60.0
    job_retention_days: float = 30.0  # finished jobs older than this are deleted; 0 keeps all
    # Access: the admin's first password comes from this file (else one is printed once);
    # directory users from the LDAP settings file.
    admin_password_file: Path | None = None
    ldap_config: Path | None = None
    # Tokens: the lifetime of a login's token unless it asks, and the most it may ask.
    token_lifetime: float = 3600.0
    token_max_lifetime: float = 86400.0
    service_token_max_lifetime: float = 366 * 86400.0
    # Limits
    max_connections: int = 20_000
    # Certificate requests waiting for an operator, and how many one client address may
    # submit (a burst, then a rate); requests that autosign signs are not counted.
    max_pending_csrs: int = 10_000
    csr_requests_per_minute: float = 10.0
    csr_burst: int = 20
    # Nodes running at once across all jobs; later work waits in order ("ready").
    task_concurrency: int = 250
    # Limits: what the API lets a client cost before it is authenticated (server.limits).
    max_request_body: int = 16 * 1024 * 1024  # bytes; a larger body is answered 413
    # API connections at once, TLS handshakes included; past it, the one that has waited
    # longest for a request makes room, else the new one is closed.
    http_max_connections: int = 5_000
    # Seconds from accept (or from the last response) to a complete request head.
    http_header_timeout: float = 10.0

    @property
    def cadir(self) -> Path:
        return self.datadir / "ca"

    @property
    def ssldir(self) -> Path:
        return self.datadir / "ssl"

    @property
    def cert_path(self) -> Path:
        return self.ssldir / f"{self.certname}.pem"

    @property
    def key_path(self) -> Path:
        return self.ssldir / f"{self.certname}.key.pem"

    @property
    def sealing_key_path(self) -> Path:
        """The key that seals stored task input (see :mod:`podium.pki.sealing`)."""
        return self.datadir / "sealing.key"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.datadir / 'podium.db'}"

    @classmethod
    def from_env(cls, **overrides: object) -> ServerSettings:
        """Settings from ``PODIUM_*`` variables, with ``overrides`` (flags given) on top."""
        values: dict[str, object] = {}
        for name, conv in (
            ("datadir", Path),
            ("database_url", str),
            ("codedir", Path),
            ("certname", str),
            ("host", str),
            ("port", int),
            ("broker_host", str),
            ("broker_port", int),
            ("job_retention_days", float),
            ("reconnect_grace", float),
            ("task_timeout", float),
            ("answer_timeout", float),
            ("task_concurrency", int),
            ("max_request_body", byte_size),
            ("http_max_connections", int),
            ("http_header_timeout", float),
            ("max_pending_csrs", int),
            ("csr_requests_per_minute", float),
            ("csr_burst", int),
            ("admin_password_file", Path),
            ("ldap_config", Path),
            ("token_lifetime", float),
            ("token_max_lifetime", float),
            ("service_token_max_lifetime", float),
        ):
            raw = env(name.upper())
            if raw:
                values[name] = conv(raw)
        raw = env("BASEMODULEPATH")
        if raw:
            values["basemodulepath"] = tuple(Path(p) for p in raw.split(":") if p)
        lists = ("brokers", "autosign", "autosign_tokens", "dns_alt_names", "puppetdb_clients")
        for name in lists:
            raw = env(name.upper())
            if raw:
                values[name] = tuple(v.strip() for v in raw.split(",") if v.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
