from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from crm_pipeline.db import migrate
from crm_pipeline.db.engine import get_engine
from crm_pipeline.db.schema import metadata

CONTRACT_COLUMNS = {
    "customers": {"id", "name", "email", "phone", "tier", "fb_psid", "created_at", "updated_at"},
    "orders": {"id", "customer_id", "amount", "currency", "status", "created_at"},
    "leads": {
        "id",
        "form_id",
        "ad_id",
        "created_time",
        "email",
        "phone",
        "full_name",
        "field_data",
        "customer_id",
    },
    "conversations": {"id", "page_id", "customer_id", "updated_time"},
    "messages": {"id", "conversation_id", "from_id", "text", "created_time"},
    "ad_insights_daily": {
        "account_id",
        "campaign_id",
        "adset_id",
        "ad_id",
        "date",
        "impressions",
        "clicks",
        "spend",
        "reach",
    },
    "change_log": set(),
    "webhook_inbox": set(),
    "sync_state": set(),
}


def test_upgrade_creates_exactly_the_declared_schema(fresh_database_url):
    assert migrate.current_revision(fresh_database_url) is None
    assert migrate.upgrade(fresh_database_url) == migrate.head_revision()
    with get_engine(fresh_database_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        inspector = inspect(conn)
        for table, columns in CONTRACT_COLUMNS.items():
            actual = {c["name"] for c in inspector.get_columns(table)}
            assert columns <= actual, f"{table} lacks {columns - actual}"
        spend = next(c for c in inspector.get_columns("ad_insights_daily") if c["name"] == "spend")
        assert "NUMERIC" in str(spend["type"]).upper()
        assert (
            str(
                conn.execute(
                    text(
                        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                        " WHERE attrelid = 'change_log'::regclass AND attname = 'txid'"
                    )
                ).scalar_one()
            )
            == "xid8"
        )
    assert diffs == []


def test_upgrade_is_repeatable_and_reversible(fresh_database_url):
    migrate.upgrade(fresh_database_url)
    migrate.upgrade(fresh_database_url)  # a second run is a no-op
    migrate.downgrade(fresh_database_url, "base")
    with get_engine(fresh_database_url).connect() as conn:
        assert "customers" not in inspect(conn).get_table_names()
    migrate.upgrade(fresh_database_url)
    assert migrate.current_revision(fresh_database_url) == migrate.head_revision()


def test_assets_refuse_an_unmigrated_database_with_what_to_do(fresh_database_url):
    from crm_pipeline.db import migrate
    from crm_pipeline.db.migrate import DatabaseNotMigrated
    from crm_pipeline.defs.resources import PostgresResource

    resource = PostgresResource(database_url=fresh_database_url)
    try:
        resource.engine()
    except DatabaseNotMigrated as exc:
        assert "crm-pipeline db upgrade" in str(exc) and "revision none" in str(exc)
    else:
        raise AssertionError("an empty database was accepted")
    migrate.upgrade(fresh_database_url)
    with resource.engine().connect() as conn:  # now current: accepted
        assert conn.exec_driver_sql("SELECT count(*) FROM customers").scalar() == 0
