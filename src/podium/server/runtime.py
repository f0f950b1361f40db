"""Everything a running server holds: store, CA, broker, job engine; built from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podium.broker.routing import Router
from podium.broker.server import Broker
from podium.classifier.store import GroupStore
from podium.errors import ConfigError, PodiumError
from podium.files import write_atomic
from podium.inventory.query import run_query
from podium.inventory.service import InventoryService
from podium.inventory.store import InventoryStore
from podium.jobs.core import Limits
from podium.jobs.link import ControllerLink, LocalLink, RemoteLink
from podium.jobs.service import JobService
from podium.pki.autosign import read_token_file
from podium.pki.ca import AutosignPolicy, CertificateAuthority
from podium.pki.revocation import CrlWatcher
from podium.pki.sealing import Sealer, load_or_create_key
from podium.pki.tls import client_context, server_context
from podium.puppet.pack import Packer
from podium.rbac.credentials import check_password_rules
from podium.rbac.service import AccessService, TokenPolicy
from podium.rbac.store import RbacStore
from podium.server.private import check_server_files
from podium.server.settings import ServerSettings
from podium.store import Store
from podium.tasks import builtin_codedir
from podium.tasks.codedir import CodeDir

if TYPE_CHECKING:
    from podium.rbac.directory import Directory

log = logging.getLogger(__name__)


def open_ca(settings: ServerSettings) -> CertificateAuthority:
    """The server's CA, created on first start; its own TLS certificate issued likewise.

    The autosign tokens given (``PODIUM_AUTOSIGN_TOKENS`` and the token files) replace
    the stored policy, with the patterns given, whenever any are.
    """
    for name, value in (
        ("max_pending_csrs", settings.max_pending_csrs),
        ("csr_requests_per_minute", settings.csr_requests_per_minute),
        ("csr_burst", settings.csr_burst),
    ):
        if value <= 0:
            raise ConfigError(f"{name} (PODIUM_{name.upper()}) must be more than 0, not {value}")
    tokens = list(settings.autosign_tokens)
    for path in settings.autosign_token_files:
        tokens += [token for token in read_token_file(path) if token not in tokens]
    policy = AutosignPolicy(patterns=settings.autosign, tokens=tuple(tokens))
    settings.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (settings.cadir / "ca_crt.pem").exists():
        ca = CertificateAuthority.open(settings.cadir)
        if policy.enabled:
            ca.set_autosign(policy)
    else:
        ca = CertificateAuthority.init(settings.cadir, autosign=policy)
        log.info("created a certificate authority in %s", settings.cadir)
    if not settings.cert_path.exists():
        dns = [n for n in settings.dns_alt_names if not _is_ip(n)]
        ips = [n for n in settings.dns_alt_names if _is_ip(n)]
        cert, key = ca.issue(
            settings.certname, dns_names=[settings.certname, *dns], ip_addresses=ips
        )
        settings.ssldir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(settings.key_path, key, mode=0o600, durable=True)
        write_atomic(settings.cert_path, cert, durable=True)  # its presence means "issued"
    return ca


def _is_ip(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _admin_password(settings: ServerSettings) -> str | None:
    path = settings.admin_password_file
    if path is None:
        return None
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the admin password file {path}: {exc.strerror}") from exc
    check_password_rules(password)
    return password


def _directory(settings: ServerSettings) -> Directory | None:
    if settings.ldap_config is None:
        return None
    from podium.rbac.directory import LdapDirectory, load_ldap_settings

    return LdapDirectory(load_ldap_settings(settings.ldap_config))


def _private_sqlite_file(url: str) -> None:
    """Create a new SQLite database file readable by the server's user alone (SQLite
    gives its -wal and -shm files the same mode)."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        path = Path(url[len(prefix) :])
        if not path.exists() and path.parent.is_dir():
            path.touch(mode=0o600)


def choose_codedir(settings: ServerSettings) -> Path:
    if settings.codedir is not None:
        return settings.codedir
    own = settings.datadir / "code"
    return own if (own / "environments").is_dir() else builtin_codedir()


class Runtime:
    """The server's parts, started and stopped together."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # Private: the database, keys and tokens live here.
        settings.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_server_files(settings)
        self.ca = open_ca(settings)
        self.sealer = Sealer(load_or_create_key(settings.sealing_key_path))
        _private_sqlite_file(settings.db_url)
        self.store = Store(settings.db_url)
        self.codedir = CodeDir(
            choose_codedir(settings), basemodulepath=settings.basemodulepath or None
        )
        self.broker: Broker | None = None
        link: ControllerLink
        if settings.brokers:
            link = RemoteLink(
                settings.certname,
                settings.brokers,
                ssl_context=client_context(
                    ca=self.ca.ca_cert_path, cert=settings.cert_path, key=settings.key_path
                ),
            )
        else:
            self.broker = Broker(
                Router(controllers={settings.certname}, max_clients=settings.max_connections),
                ssl_context=server_context(
                    cert=settings.cert_path,
                    key=settings.key_path,
                    ca=self.ca.ca_cert_path,
                    require_client_cert=True,
                ),
                host=settings.broker_host,
                port=settings.broker_port,
                crl_path=self.ca.crl_path,
            )
            link = LocalLink(self.broker, settings.certname)
        self.link = link
        self.jobs = JobService(
            self.store,
            link,
            self.codedir,
            sealer=self.sealer,
            record_facts=InventoryStore.of(self.store).record_facts_many,
            packer=Packer(self.codedir, settings.datadir / "packs"),
            classify=self._classify,
            record_reports=self._record_reports,
            limits=Limits(
                max_running=settings.task_concurrency,
                reconnect_grace=settings.reconnect_grace,
                default_node_timeout=settings.task_timeout,
                answer_timeout=settings.answer_timeout,
            ),
        )
        self.access = AccessService(
            RbacStore(self.store),
            directory=_directory(settings),
            tokens=TokenPolicy(
                default_lifetime=settings.token_lifetime,
                max_lifetime=settings.token_max_lifetime,
                max_service_lifetime=settings.service_token_max_lifetime,
            ),
        )
        self.inventory = InventoryService(self.store, GroupStore(self.store), self._run_query)
        self._crl = CrlWatcher(self.ca.crl_path)
        self._revoked: frozenset[int] = frozenset()
        self._housekeeping: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _classify(self, certnames: Sequence[str]) -> dict[str, dict[str, Any] | str]:
        return self.inventory.classifications(certnames)

    def _record_reports(self, payloads: Sequence[dict[str, Any]]) -> None:
        from podium.inventory.reports import parse_report

        reports = []
        for payload in payloads:
            try:
                reports.append(parse_report(payload))
            except PodiumError as exc:
                log.warning(
                    "a Puppet report from %s was not stored: %s", payload.get("certname"), exc.msg
                )
        if reports:
            InventoryStore.of(self.store).store_reports(reports)

    def _run_query(self, ast: list[Any]) -> list[Any]:
        rows, _ = run_query(self.store, ast)
        return list(rows)

    def is_revoked(self, serial: int | None) -> bool:
        """Whether a client certificate's serial is on the CA's current CRL (or unknown)."""
        fresh = self._crl.refresh()  # one fstat unless the CRL changed
        if fresh is not None:
            self._revoked = fresh
        return serial is None or serial in self._revoked

    async def _purge_old_jobs(self, every: float = 3600.0) -> None:
        """Keep the job history to the retention period, checking hourly."""
        keep = timedelta(days=self.settings.job_retention_days)
        while True:
            try:
                removed = await asyncio.to_thread(
                    self.store.purge_jobs, finished_before=datetime.now(UTC) - keep
                )
            except PodiumError as exc:
                log.warning("could not delete old jobs: %s", exc.msg)
            else:
                if removed:
                    log.info("deleted %d jobs older than %g days", removed, keep.days)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), every)
                return

    async def start(self) -> None:
        await asyncio.to_thread(self.store.migrate)
        generated = await asyncio.to_thread(self.access.bootstrap, _admin_password(self.settings))
        if generated is not None:
            # Once, on the terminal, never in the log: the user logs in and changes it.
            print(
                f"Created the user admin with the password {generated}\n"
                "Log in with `podium access login --user admin`, then change it with "
                "`podium user password admin`.",
                file=sys.stderr,
                flush=True,
            )
        if self.settings.job_retention_days > 0:
            self._housekeeping = asyncio.create_task(self._purge_old_jobs())
        # The engine resumes its jobs before the broker lets any agent in.
        await self.jobs.start(inventory_timeout=0.5 if self.broker is not None else 5.0)
        if self.broker is not None:
            await self.broker.start()
            self.link.broker_url = f"wss://{self.settings.broker_host}:{self.broker.port}/pcp/v2"
            log.info("broker listening on wss://%s:%d", self.settings.broker_host, self.broker.port)

    async def stop(self) -> None:
        if self._housekeeping is not None:
            # Not cancelled: a purge under way in its thread finishes before the store
            # closes.
            self._stopping.set()
            await self._housekeeping
        await self.jobs.stop()
        if self.broker is not None:
            await self.broker.stop()
        await asyncio.to_thread(self.store.close)
