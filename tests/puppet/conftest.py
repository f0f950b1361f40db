"""Fixtures for the tests with a real Puppet Server: Debian's puppetserver 7, whose
PuppetDB terminus reports to a real Podium server.

One certificate authority, Podium's: ``podium`` is a Podium server with the agent of
:data:`NODE`; ``puppet_server`` is a Puppet Server (started once per run, its CA
disabled) serving with a certificate that Podium's CA issued, its terminus pointed at
Podium's API; ``puppet_agent`` runs ``puppet agent`` for :data:`NODE` with that node's
Podium certificate. A missing Puppet fails the tests (a skip would hide a missing
feature): run ``scripts/ensure-puppet``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.installation import Installation, start_installation
from podium.pki.ca import CertificateAuthority
from puppetserver import PuppetAgent, PuppetNotInstalled, PuppetServer, TlsFiles, missing_puppet

NODE = "agent-1.puppet.e2e"  # a Podium agent, and the node Puppet runs on
PUPPET_SERVER = "puppet.e2e"  # the Puppet Server's certname


@contextlib.contextmanager
def _podium_environment(**settings: str) -> Iterator[None]:
    """Processes started in it take the settings given (``PODIUM_<NAME>``) and their
    flags, never the caller's ``PODIUM_*`` variables (a ``PODIUM_BROKERS`` would detach
    the broker)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("PODIUM_") and not name.startswith("PODIUM_TEST_"):
                patch.delenv(name)
        for name, value in settings.items():
            patch.setenv(f"PODIUM_{name.upper()}", value)
        yield


@pytest.fixture(scope="session")
def podium() -> Iterator[Installation]:
    """A Podium server with the agent of :data:`NODE`, its facts stored; the Puppet
    Server's certificate may use its PuppetDB API without a token."""
    with contextlib.ExitStack() as stack:
        with _podium_environment(puppetdb_clients=PUPPET_SERVER):
            installation = stack.enter_context(start_installation([NODE]))
        installation.wait_for_facts(NODE)
        yield installation


@pytest.fixture(scope="session")
def puppet_server(
    podium: Installation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PuppetServer]:
    """The Puppet Server of this run, its PuppetDB terminus sending to ``podium``."""
    missing = missing_puppet()
    if missing:
        pytest.fail(missing, pytrace=False)
    folder = tmp_path_factory.mktemp("puppetserver")
    tls = issue(podium.fleet.cadir, PUPPET_SERVER, folder / "issued")
    server = PuppetServer(
        folder / "server", certname=PUPPET_SERVER, tls=tls, puppetdb_url=podium.fleet.server_url
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def puppet_agent(podium: Installation, puppet_server: PuppetServer, tmp_path: Path) -> PuppetAgent:
    """``puppet agent`` for :data:`NODE`, with the certificate and key its Podium agent
    enrolled for, in folders of its own; the CRL comes from Podium's CA API."""
    ssldir = podium.vardir(NODE) / "ssl"
    tls = TlsFiles(
        cert=ssldir / "certs" / f"{NODE}.pem",
        key=ssldir / "private_keys" / f"{NODE}.pem",
        ca=podium.fleet.cacert,
    )
    try:
        return PuppetAgent(
            tmp_path / "puppet",
            certname=NODE,
            server=puppet_server,
            tls=tls,
            ca_url=podium.fleet.server_url,
        )
    except PuppetNotInstalled as error:
        pytest.fail(str(error), pytrace=False)


def issue(cadir: Path, certname: str, folder: Path) -> TlsFiles:
    """A server certificate for ``certname`` (also ``localhost`` and 127.0.0.1) from the
    CA in ``cadir``, with the CA's certificate and CRL, as files in ``folder``."""
    ca = CertificateAuthority.open(cadir)
    cert, key = ca.issue(certname, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        cert=folder / f"{certname}.pem",
        key=folder / f"{certname}.key",
        ca=folder / "ca.pem",
        crl=folder / "crl.pem",
    )
    files.cert.write_bytes(cert)
    files.key.touch(mode=0o600)
    files.key.write_bytes(key)
    files.ca.write_bytes(ca.ca_certificate())
    (folder / "crl.pem").write_bytes(ca.crl())
    return files
