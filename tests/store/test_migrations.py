"""Migrations: the schema comes from Alembic, once, and matches what the code expects."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event

from podium.errors import StoreError
from podium.store import Store, schema
from podium.store.engine import create_engine, database_url
from podium.store.tables import metadata

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def engine_for(db_url: str) -> sa.Engine:
    return create_engine(database_url(db_url), busy_timeout=5)


def table_names(db_url: str) -> set[str]:
    engine = engine_for(db_url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrating_creates_the_tables_and_records_the_head_revision(db_url: str) -> None:
    with Store(db_url) as store:
        store.migrate()
    assert table_names(db_url) == {"alembic_version", *metadata.tables}
    assert {"nodes", "jobs", "job_nodes", "job_events", "node_groups"} <= set(metadata.tables)
    engine = engine_for(db_url)
    with engine.connect() as connection:
        assert schema.current(connection) == schema.head()
    engine.dispose()


def test_migrating_twice_changes_nothing(db_url: str) -> None:
    with Store(db_url) as store:
        store.migrate()
        job_id = store.create_job(
            type="task",
            owner="admin",
            environment="production",
            description="kept",
            options={},
            nodes=[("a.example.com", "tx-a")],
            at=NOW,
        )
        sent: list[str] = []
        event.listen(
            store._engine, "before_cursor_execute", lambda c, cur, sql, *_: sent.append(sql)
        )
        store.migrate()
        assert sent  # it did look at the database
        changes = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE")
        assert [sql for sql in sent if sql.lstrip().upper().startswith(changes)] == []
        assert store.get_job(job_id).description == "kept"
    with Store(db_url) as again:
        again.migrate()
        assert again.get_job(job_id).node_count == 1


def test_migrations_build_exactly_the_schema_the_code_uses(store: Store, db_url: str) -> None:
    engine = engine_for(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []


def test_migrations_running_at_once_from_several_threads_all_succeed(db_url: str) -> None:
    stores = [Store(db_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def migrate(store: Store) -> None:
        barrier.wait()
        try:
            store.migrate()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert "jobs" in table_names(db_url)


def test_using_an_unmigrated_database_says_to_migrate_it(db_url: str) -> None:
    with Store(db_url) as store, pytest.raises(StoreError, match=r"migrate it first"):
        store.get_job(1)


def test_a_database_migrated_by_a_newer_podium_is_refused_with_advice(
    store: Store, db_url: str
) -> None:
    engine = engine_for(db_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"newer Podium"):
        store.migrate()
