"""Insight values and Meta's account totals.

- `ad_insights_daily` gains Meta's `frequency`, the `action_values` and `conversions` lists
  (kept whole, like `actions`) and the `purchases` / `purchase_value` lifted out of them. The
  new columns are nullable or default to 0, so writers that follow the documented contract
  (which does not name them) still succeed.
- `ad_account_insights_daily`: Meta's own totals of each ad account and day (level=account
  insights), which the sum of that day's ad rows must match (the `matches_account_totals`
  check). No change-log trigger: no cache file reads it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ad_insights_daily", sa.Column("frequency", sa.Numeric))
    op.add_column("ad_insights_daily", sa.Column("action_values", JSONB))
    op.add_column("ad_insights_daily", sa.Column("conversions", JSONB))
    op.add_column(
        "ad_insights_daily",
        sa.Column("purchases", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.add_column(
        "ad_insights_daily",
        sa.Column("purchase_value", sa.Numeric(18, 4), nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "ad_account_insights_daily",
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("date", sa.Date, nullable=False),
        sa.Column("spend", sa.Numeric(18, 4), nullable=False, server_default=sa.text("0")),
        sa.Column("impressions", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("clicks", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column(
            "synced_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("account_id", "date", name="pk_ad_account_insights_daily"),
    )


def downgrade() -> None:
    op.drop_table("ad_account_insights_daily")
    for column in ("purchase_value", "purchases", "conversions", "action_values", "frequency"):
        op.drop_column("ad_insights_daily", column)
