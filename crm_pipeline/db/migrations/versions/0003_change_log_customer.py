"""Change log names the customer a change affects, so the sensor rebuilds only their files.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Which customer a row belongs to: customers by id, orders/leads/conversations by customer_id,
# messages through their conversation. An update that moves a row to another customer logs
# both, so the old customer's file loses it and the new one's gains it.
ROW_FUNCTION = """
CREATE OR REPLACE FUNCTION crm_row_customer(tbl text, r jsonb) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF r IS NULL THEN
        RETURN NULL;
    ELSIF tbl = 'customers' THEN
        RETURN (r->>'id')::bigint;
    ELSIF tbl = 'messages' THEN
        RETURN (SELECT customer_id FROM conversations WHERE id = r->>'conversation_id');
    ELSE
        RETURN (r->>'customer_id')::bigint;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION crm_log_row_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_customer bigint;
    new_customer bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO change_log (entity, entity_key, op, customer_id)
        VALUES (TG_TABLE_NAME, OLD.id::text, 'delete', crm_row_customer(TG_TABLE_NAME, to_jsonb(OLD)));
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW IS NOT DISTINCT FROM OLD THEN
        RETURN NEW;
    END IF;
    new_customer := crm_row_customer(TG_TABLE_NAME, to_jsonb(NEW));
    INSERT INTO change_log (entity, entity_key, op, customer_id)
    VALUES (TG_TABLE_NAME, NEW.id::text, lower(TG_OP), new_customer);
    IF TG_OP = 'UPDATE' THEN
        old_customer := crm_row_customer(TG_TABLE_NAME, to_jsonb(OLD));
        IF old_customer IS DISTINCT FROM new_customer AND old_customer IS NOT NULL THEN
            INSERT INTO change_log (entity, entity_key, op, customer_id)
            VALUES (TG_TABLE_NAME, NEW.id::text, 'update', old_customer);
        END IF;
    END IF;
    RETURN NEW;
END
$$;
"""

PREVIOUS_ROW_FUNCTION = """
CREATE OR REPLACE FUNCTION crm_log_row_change() RETURNS trigger LANGUAGE plpgsql AS $$
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


def upgrade() -> None:
    op.add_column("change_log", sa.Column("customer_id", sa.BigInteger))
    op.create_index("ix_change_log_changed_at", "change_log", ["changed_at"])
    op.execute(ROW_FUNCTION)


def downgrade() -> None:
    op.execute(PREVIOUS_ROW_FUNCTION)
    op.execute("DROP FUNCTION IF EXISTS crm_row_customer(text, jsonb)")
    op.drop_index("ix_change_log_changed_at", "change_log")
    op.drop_column("change_log", "customer_id")
