"""Databases for tests: every storage test runs on SQLite and on PostgreSQL.

``db_url`` is a fresh, empty database per test, once per backend; ``store`` is a
migrated :class:`~podium.store.Store` on it. PostgreSQL is a throw-away server started
once per run (see ``pgserver.py``), or the server at ``PODIUM_TEST_POSTGRES_URL``. A
missing PostgreSQL fails the tests that need it: run ``scripts/ensure-postgres``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, settings

from pgserver import DatabaseSupply, PostgresNotInstalled, PostgresServer
from podium.rbac import credentials
from podium.store import Store

BACKENDS = ["sqlite", "postgresql"]

# A loaded 2-core machine runs examples slowly: never a failure (no deadline, no
# too-slow health check). Speed is measured in bench/.
settings.register_profile("podium", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("podium")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server of this test run."""
    server = PostgresServer(os.environ.get("PODIUM_TEST_POSTGRES_URL") or None)
    missing = None
    try:
        server.start()
    except PostgresNotInstalled as error:
        missing = str(error)
    if missing:
        pytest.fail(missing, pytrace=False)  # never skip: storage tests run on both databases
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: PostgresServer) -> Iterator[DatabaseSupply]:
    """Empty databases on that server, made ahead of the tests that take them."""
    supply = DatabaseSupply(postgres_server)
    yield supply
    supply.close()


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'podium.db'}"
        return
    supply: DatabaseSupply = request.getfixturevalue("postgres_databases")
    url = supply.take()
    yield url
    supply.give_back(url)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated Store on a new database."""
    store = Store(db_url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with the least work: in-process tests hash a password at every server
    start (real servers started as processes keep the real cost)."""
    monkeypatch.setattr(
        credentials, "hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture(autouse=True)
def _own_config_folder(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes the token of the user running the suite."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
