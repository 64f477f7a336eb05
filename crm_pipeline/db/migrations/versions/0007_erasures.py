"""Erasure requests and the keyed hashes of erased identifiers.

- `erasures`: one row per erasure carried out (what kind of selector, when, by whom, how many
  rows of each table); never the erased values themselves.
- `erased_identifiers`: each identifier of an erased person (email, phone, PSID, leadgen id,
  conversation id) as an HMAC-SHA256 keyed with `CRM_MASK_KEY`, so a later sync or webhook that
  brings the same person back is recognised and dropped without keeping the value in clear.

Neither table is read by a cache file, so neither has a change-log trigger.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("selector", sa.Text, nullable=False),
        sa.Column(
            "erased_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
        ),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("counts", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.PrimaryKeyConstraint("id", name="pk_erasures"),
    )
    op.create_table(
        "erased_identifiers",
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("digest", sa.Text, nullable=False),
        sa.Column("erasure_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("kind", "digest", name="pk_erased_identifiers"),
        sa.ForeignKeyConstraint(
            ["erasure_id"],
            ["erasures.id"],
            name="fk_erased_identifiers_erasure_id_erasures",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("erased_identifiers")
    op.drop_table("erasures")
