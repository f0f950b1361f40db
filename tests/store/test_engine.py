"""Engines: URLs, SQLite's settings, time zones, and errors a user can act on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from podium.errors import ConfigError, StoreError, ValidationError
from podium.store import JobUpdate, NewEvent, NodeUpdate, Store
from podium.store.engine import database_url


def test_database_urls_without_a_driver_open_the_same_database(store: Store, db_url: str) -> None:
    store.record_facts("web1.example.com", {"os": "debian"}, datetime.now(UTC))
    url = sa.make_url(db_url)
    if store.dialect == "postgresql":
        assert url.drivername == "postgresql+psycopg"
        plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
        variants = [plain, plain.replace("postgresql://", "postgres://", 1)]
    else:
        variants = [f"sqlite+pysqlite:///{url.database}", str(url.database)]
    for variant in variants:
        with Store(variant) as other:
            assert other.dialect == store.dialect
            assert other.url.drivername in ("sqlite", "postgresql+psycopg")
            assert other.get_node("web1.example.com").facts == {"os": "debian"}


@pytest.mark.parametrize(
    "url", ["mysql://root@localhost/podium", "postgresql+asyncpg://u@h/d", "sqlite+aiosqlite://"]
)
def test_urls_of_other_databases_and_drivers_are_refused_with_advice(url: str) -> None:
    with pytest.raises(ConfigError, match=r"use sqlite:///PATH or postgresql://"):
        database_url(url)


def test_sqlite_runs_in_wal_mode_with_normal_sync_busy_timeout_and_foreign_keys(
    tmp_path: Path,
) -> None:
    with Store(f"sqlite:///{tmp_path}/nested/dir/podium.db", busy_timeout=7) as store:
        store.migrate()
        with store._engine.connect() as connection:

            def pragma(name: str) -> object:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("busy_timeout") == 7000
            assert pragma("foreign_keys") == 1
    assert (tmp_path / "nested" / "dir" / "podium.db").is_file()


def test_timestamps_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=2))
    at = datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=paris)
    store.record_facts("a.example.com", {}, at)
    job_id = store.create_job(
        type="task",
        owner="admin",
        environment="production",
        description="",
        options={},
        nodes=[("a.example.com", "tx-a")],
        at=at,
    )
    later = at + timedelta(seconds=2)
    store.apply_node_updates([NodeUpdate("tx-a", "running", started_at=at, give_up_at=later)])
    running = store.node_by_transaction("tx-a")
    assert running is not None and running.give_up_at == later
    assert running.give_up_at.tzinfo == UTC
    store.apply_node_updates(
        [NodeUpdate("tx-a", "finished", finished_at=at + timedelta(seconds=1))]
    )
    store.set_job_state(JobUpdate(job_id, "running", started_at=at))

    node = store.get_node("a.example.com")
    job = store.get_job(job_id)
    [job_node], _ = store.job_nodes(job_id)
    for value in (
        node.first_seen,
        node.facts_timestamp,
        job.created_at,
        job.started_at,
        job_node.started_at,
    ):
        assert value == at
        assert value is not None and value.tzinfo == UTC
        assert value.hour == 12  # 14:30 at UTC+2
    assert job_node.finished_at == datetime(2026, 6, 1, 12, 30, 16, 123456, tzinfo=UTC)


def test_naive_timestamps_are_refused_because_their_zone_is_unknown(store: Store) -> None:
    naive = datetime(2026, 6, 1, 12, 0)
    with pytest.raises(ValidationError, match=r"no time zone"):
        store.record_facts("a.example.com", {}, naive)
    job_id = store.create_job(
        type="task",
        owner="admin",
        environment="production",
        description="",
        options={},
        nodes=[("a.example.com", "tx-a")],
        at=datetime.now(UTC),
    )
    for update in (
        NodeUpdate("tx-a", "running", started_at=naive),
        NodeUpdate("tx-a", "finished", finished_at=naive),
        NodeUpdate("tx-a", "running", give_up_at=naive),
    ):
        with pytest.raises(ValidationError, match=r"no time zone"):
            store.apply_node_updates([update])
    for job in (
        JobUpdate(job_id, "running", started_at=naive),
        JobUpdate(job_id, "finished", finished_at=naive),
    ):
        with pytest.raises(ValidationError, match=r"no time zone"):
            store.set_job_state(job)
    node = store.node_by_transaction("tx-a")
    assert node is not None and node.state == "new"
    assert store.get_job(job_id).state == "new"


def test_values_that_are_not_json_are_refused(store: Store) -> None:
    job_id = store.create_job(
        type="task",
        owner="admin",
        environment="production",
        description="",
        options={},
        nodes=[("a.example.com", "tx-a")],
        at=datetime.now(UTC),
    )
    calls: list[Callable[[], object]] = [
        lambda: store.record_facts("a.example.com", {"when": object()}, datetime.now(UTC)),
        lambda: store.apply_node_updates(
            [NodeUpdate("tx-a", "finished", finished_at=datetime.now(UTC), result={"x": {1, 2}})]
        ),
        lambda: store.add_events([NewEvent(job_id, "x", datetime.now(UTC), details={"y": b"z"})]),
    ]
    for call in calls:
        with pytest.raises(ValidationError, match=r"^a value cannot be stored as JSON: Type is"):
            call()
    assert store.list_nodes() == []
    node = store.node_by_transaction("tx-a")
    assert node is not None and (node.state, node.result) == ("new", None)


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        ("postgresql://podium@127.0.0.1:1/podium", r"check that the server is running"),
        ("sqlite:////dev/null/podium.db", r"create it or choose another path"),
    ],
    ids=["postgresql", "sqlite"],
)
def test_an_unusable_database_is_a_store_error_that_says_what_to_do(url: str, advice: str) -> None:
    with pytest.raises(StoreError, match=advice) as raised, Store(url) as store:
        store.migrate()
    assert "Traceback" not in str(raised.value)
