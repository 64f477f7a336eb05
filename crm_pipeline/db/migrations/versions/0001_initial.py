"""Initial schema: marketing objects, insights, CRM core, change log and its triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from crm_pipeline.db.schema import ROW_LOGGED_TABLES, STATEMENT_LOGGED_TABLES, Xid8

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
NOW = sa.text("now()")


def _marketing_object(name: str, *extra: sa.Column) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Text),
        sa.Column("account_id", sa.Text, nullable=False),
        *extra,
        sa.Column("name", sa.Text),
        sa.Column("status", sa.Text),
        sa.Column("created_time", TZ),
        sa.Column("updated_time", TZ),
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
    )
    op.create_index(f"ix_{name}_account_id", name, ["account_id"])


def upgrade() -> None:
    op.create_table(
        "ad_accounts",
        sa.Column("id", sa.Text),
        sa.Column("name", sa.Text),
        sa.Column("currency", sa.Text),
        sa.Column("timezone_name", sa.Text),
        sa.Column("synced_at", TZ, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_ad_accounts"),
    )
    _marketing_object("campaigns", sa.Column("objective", sa.Text))
    _marketing_object("adsets", sa.Column("campaign_id", sa.Text, nullable=False))
    _marketing_object(
        "ads",
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("adset_id", sa.Text, nullable=False),
    )
    op.create_table(
        "ad_insights_daily",
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("campaign_id", sa.Text, nullable=False),
        sa.Column("adset_id", sa.Text, nullable=False),
        sa.Column("ad_id", sa.Text, nullable=False),
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("impressions", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("clicks", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("spend", sa.Numeric(18, 4), nullable=False, server_default=sa.text("0")),
        sa.Column("reach", sa.BigInteger),
        sa.Column("synced_at", TZ, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("ad_id", "date", name="pk_ad_insights_daily"),
    )
    op.create_index(
        "ix_ad_insights_daily_account_id_date", "ad_insights_daily", ["account_id", "date"]
    )
    op.create_index(
        "ix_ad_insights_daily_campaign_id_date", "ad_insights_daily", ["campaign_id", "date"]
    )

    op.create_table(
        "customers",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False)),
        sa.Column("name", sa.Text),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("tier", sa.Text, nullable=False, server_default=sa.text("'standard'")),
        sa.Column("fb_psid", sa.Text),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
        sa.Column("updated_at", TZ, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
        sa.UniqueConstraint("email", name="uq_customers_email"),
        sa.UniqueConstraint("fb_psid", name="uq_customers_fb_psid"),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False)),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("currency", sa.Text, nullable=False, server_default=sa.text("'USD'")),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'paid'")),
        sa.Column("created_at", TZ, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        sa.UniqueConstraint("external_id", name="uq_orders_external_id"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_orders_customer_id_customers",
            ondelete="RESTRICT",
        ),
    )
    op.create_index("ix_orders_customer_id", "orders", ["customer_id"])
    op.create_table(
        "leads",
        sa.Column("id", sa.Text),
        sa.Column("form_id", sa.Text),
        sa.Column("ad_id", sa.Text),
        sa.Column("created_time", TZ),
        sa.Column("email", sa.Text),
        sa.Column("phone", sa.Text),
        sa.Column("full_name", sa.Text),
        sa.Column("field_data", JSONB),
        sa.Column("customer_id", sa.BigInteger),
        sa.PrimaryKeyConstraint("id", name="pk_leads"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_leads_customer_id_customers",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_leads_customer_id", "leads", ["customer_id"])
    op.create_table(
        "conversations",
        sa.Column("id", sa.Text),
        sa.Column("page_id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.BigInteger),
        sa.Column("updated_time", TZ),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_conversations_customer_id_customers",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_conversations_customer_id", "conversations", ["customer_id"])
    op.create_table(
        "messages",
        sa.Column("id", sa.Text),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("from_id", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("created_time", TZ),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_messages_conversation_id_conversations",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_messages_conversation_id", "messages", ["conversation_id"])

    op.create_table(
        "change_log",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True)),
        sa.Column("txid", Xid8(), nullable=False, server_default=sa.text("pg_current_xact_id()")),
        sa.Column("entity", sa.Text, nullable=False),
        sa.Column("entity_key", sa.Text),
        sa.Column("op", sa.Text, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("changed_at", TZ, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_change_log"),
    )
    op.create_index("ix_change_log_txid", "change_log", ["txid"])
    op.create_table(
        "sync_state",
        sa.Column("stream", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("state", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("updated_at", TZ, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("stream", "scope", name="pk_sync_state"),
    )
    op.create_table(
        "webhook_inbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False)),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("event_key", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("received_at", TZ, nullable=False, server_default=NOW),
        sa.Column("processed_at", TZ),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_inbox"),
        sa.UniqueConstraint("source", "event_key", name="uq_webhook_inbox_source_event_key"),
    )

    _create_change_triggers()


# Row-level: one change row per written row, keyed by its id. An UPDATE that changes nothing
# logs nothing, so idempotent re-syncs stay quiet.
ROW_FUNCTION = """
CREATE FUNCTION crm_log_row_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO change_log (entity, entity_key, op) VALUES (TG_TABLE_NAME, OLD.id::text, 'delete');
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    INSERT INTO change_log (entity, entity_key, op) VALUES (TG_TABLE_NAME, NEW.id::text, lower(TG_OP));
    RETURN NEW;
END
$$;
"""

# Statement-level with a transition table: one change row per statement and coarse key
# (TG_ARGV[0], an SQL expression over the table's columns, e.g. account and day), so a
# million-row insights load writes a few dozen change rows, not a million.
STATEMENT_FUNCTION = """
CREATE FUNCTION crm_log_statement_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO change_log (entity, entity_key, op, row_count) '
        'SELECT %L, %s, %L, count(*) FROM changed_rows GROUP BY 2',
        TG_TABLE_NAME, TG_ARGV[0], lower(TG_OP));
    RETURN NULL;
END
$$;
"""

TRUNCATE_FUNCTION = """
CREATE FUNCTION crm_log_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_log (entity, entity_key, op, row_count) VALUES (TG_TABLE_NAME, NULL, 'truncate', 0);
    RETURN NULL;
END
$$;
"""


def _create_change_triggers() -> None:
    op.execute(ROW_FUNCTION)
    op.execute(STATEMENT_FUNCTION)
    op.execute(TRUNCATE_FUNCTION)
    for table in ROW_LOGGED_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_change_log AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION crm_log_row_change()"
        )
    for table, key_expr in STATEMENT_LOGGED_TABLES.items():
        arg = key_expr.replace("'", "''")
        # A trigger with a transition table may name only one event, hence three.
        for event, transition in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            op.execute(
                f"CREATE TRIGGER {table}_change_log_{event.lower()} AFTER {event} ON {table} "
                f"REFERENCING {transition} TABLE AS changed_rows "
                f"FOR EACH STATEMENT EXECUTE FUNCTION crm_log_statement_change('{arg}')"
            )
    for table in (*ROW_LOGGED_TABLES, *STATEMENT_LOGGED_TABLES):
        op.execute(
            f"CREATE TRIGGER {table}_change_log_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION crm_log_truncate()"
        )


def downgrade() -> None:
    for table in (
        "webhook_inbox",
        "sync_state",
        "change_log",
        "messages",
        "conversations",
        "leads",
        "orders",
        "customers",
        "ad_insights_daily",
        "ads",
        "adsets",
        "campaigns",
        "ad_accounts",
    ):
        op.drop_table(table)
    for function in ("crm_log_row_change", "crm_log_statement_change", "crm_log_truncate"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
