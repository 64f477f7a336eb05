"""API keys, the actor of every change, rejected webhook entries, orders true to the contract.

- `api_keys`: named keys with scopes; only a SHA-256 of each key is stored. A statement trigger
  notifies `crm_api_keys` when keys are added, revoked or changed, so API processes reload their
  in-memory copy at once instead of asking the database on every request.
- `change_log.actor`: who wrote the row. API writes set `crm.actor` for their transaction
  (`SET LOCAL`); any other writer (psql, another app, the bulk sync) is named by its database
  role. It is a column default, so every trigger that writes `change_log` fills it.
- `customers.updated_by`: the actor of the last real change to the customer row.
- `webhook_inbox.rejected_at` and a generated `status` (pending, processed, rejected): a
  malformed entry of a signed delivery is kept, with its reason in `error`, and never retried.
- `orders.external_id` becomes nullable (still unique when present): the documented contract of
  `orders` does not include it, and a writer that follows the contract must succeed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ACTOR_FUNCTION = """
CREATE OR REPLACE FUNCTION crm_current_actor() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('crm.actor', true), ''), current_user::text)
$$;
"""

STAMP_UPDATED_BY = """
CREATE OR REPLACE FUNCTION crm_stamp_updated_by() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A no-op update keeps the last real writer (and logs no change).
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    NEW.updated_by := crm_current_actor();
    RETURN NEW;
END
$$;
CREATE TRIGGER customers_updated_by BEFORE INSERT OR UPDATE ON customers
FOR EACH ROW EXECUTE FUNCTION crm_stamp_updated_by();
"""

NOTIFY_API_KEYS = """
CREATE OR REPLACE FUNCTION crm_notify_api_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crm_api_keys', TG_OP);
    RETURN NULL;
END
$$;
CREATE TRIGGER api_keys_changed
AFTER INSERT OR DELETE OR UPDATE OF name, key_hash, scopes, revoked_at OR TRUNCATE ON api_keys
FOR EACH STATEMENT EXECUTE FUNCTION crm_notify_api_keys();
"""

INBOX_STATUS = (
    "CASE WHEN rejected_at IS NOT NULL THEN 'rejected'"
    " WHEN processed_at IS NOT NULL THEN 'processed' ELSE 'pending' END"
)


def upgrade() -> None:
    op.execute(ACTOR_FUNCTION)
    op.add_column(
        "change_log",
        sa.Column("actor", sa.Text, nullable=False, server_default=sa.text("crm_current_actor()")),
    )
    op.add_column("customers", sa.Column("updated_by", sa.Text))
    op.execute(STAMP_UPDATED_BY)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("key_prefix", sa.Text, nullable=False),
        sa.Column("key_hash", sa.Text, nullable=False),
        sa.Column("scopes", ARRAY(sa.Text), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    # One active key per name; a revoked name can be issued again.
    op.create_index(
        "ix_api_keys_active_name",
        "api_keys",
        ["name"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.execute(NOTIFY_API_KEYS)

    op.add_column("webhook_inbox", sa.Column("rejected_at", sa.DateTime(timezone=True)))
    op.add_column(
        "webhook_inbox",
        sa.Column("status", sa.Text, sa.Computed(INBOX_STATUS, persisted=True), nullable=False),
    )

    op.alter_column("orders", "external_id", existing_type=sa.Text, nullable=True)


def downgrade() -> None:
    # Orders written without one keep a stable, recognisable key instead of being dropped.
    op.execute("UPDATE orders SET external_id = 'crm-order-' || id WHERE external_id IS NULL")
    op.alter_column("orders", "external_id", existing_type=sa.Text, nullable=False)
    op.drop_column("webhook_inbox", "status")
    op.drop_column("webhook_inbox", "rejected_at")
    op.drop_table("api_keys")
    op.execute("DROP FUNCTION IF EXISTS crm_notify_api_keys()")
    op.execute("DROP TRIGGER IF EXISTS customers_updated_by ON customers")
    op.execute("DROP FUNCTION IF EXISTS crm_stamp_updated_by()")
    op.drop_column("customers", "updated_by")
    op.drop_column("change_log", "actor")
    op.execute("DROP FUNCTION IF EXISTS crm_current_actor()")
