"""Alembic's entry point: migrate the connection that Podium hands over.

Podium runs its migrations itself (:func:`podium.store.schema.upgrade`), inside a
transaction it has begun on the connection it passes in ``config.attributes``;
there is no ``alembic.ini`` and no offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from podium.store.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("Podium's migrations run through podium.store.Store.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters most things by copying the table; batch mode writes that for us.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
