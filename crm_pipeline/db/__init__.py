"""PostgreSQL layer: schema, migrations, bulk upsert, change log."""
