"""Alembic migrations of Podium's schema, run by :meth:`podium.store.Store.migrate`."""
