"""Facebook streams in depth: insights actions and lead counts, lead/conversation details.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ad_insights_daily", sa.Column("actions", JSONB))
    op.add_column(
        "ad_insights_daily",
        sa.Column("leads", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("leads", sa.Column("page_id", sa.Text))
    op.add_column("leads", sa.Column("campaign_id", sa.Text))
    op.create_index("ix_leads_created_time", "leads", ["created_time"])
    op.add_column("conversations", sa.Column("psid", sa.Text))
    op.create_index("ix_conversations_psid", "conversations", ["psid"])
    op.create_index("ix_messages_created_time", "messages", ["created_time"])


def downgrade() -> None:
    op.drop_index("ix_messages_created_time", "messages")
    op.drop_index("ix_conversations_psid", "conversations")
    op.drop_column("conversations", "psid")
    op.drop_index("ix_leads_created_time", "leads")
    op.drop_column("leads", "campaign_id")
    op.drop_column("leads", "page_id")
    op.drop_column("ad_insights_daily", "leads")
    op.drop_column("ad_insights_daily", "actions")
