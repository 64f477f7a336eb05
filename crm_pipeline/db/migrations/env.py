"""Alembic environment: run by `crm_pipeline.db.migrate`, which passes the connection in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from crm_pipeline.db.schema import metadata

# Any fixed 64-bit number: serialises concurrent `db upgrade` runs (demo + tests + daemon).
_MIGRATION_LOCK_ID = 0x43524D5F4D4947

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    compare_type=True,
    transaction_per_migration=False,
)
with context.begin_transaction():
    connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    context.run_migrations()
