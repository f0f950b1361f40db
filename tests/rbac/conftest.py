"""Fixtures for the access-control tests.

``slapd`` is a real OpenLDAP server holding the example directory of ``slapd.py``,
started once per run on loopback, with ldap:// and ldaps:// listeners. A missing slapd
fails the tests that need it (a skip would hide a missing feature): run
``scripts/ensure-slapd``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slapd import SUFFIX, SlapdNotInstalled, SlapdServer, TlsFiles, example_ldif

from identities import Identities


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlapdServer]:
    """The directory server of this test run."""
    identities = Identities(tmp_path_factory.mktemp("slapd-pki"))
    cert, key = identities.files("localhost")
    tls = TlsFiles(ca=identities.ca.ca_cert_path, cert=cert, key=key)
    missing = None
    try:
        server = SlapdServer(tmp_path_factory.mktemp("slapd"), suffix=SUFFIX, tls=tls)
    except SlapdNotInstalled as error:
        missing = str(error)
    if missing:
        pytest.fail(missing, pytrace=False)
    server.start(example_ldif(server.hash_password))
    try:
        yield server
    finally:
        server.stop()
