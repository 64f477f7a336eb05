"""Change notifications for the cache worker and the API, and the worker's recorded progress.

- An AFTER INSERT trigger on `change_log` sends `pg_notify('crm_changes', '<txid>:<entity>:<customer>')`
  for every change row, whichever trigger wrote it (so the table triggers stay as they are).
  PostgreSQL delivers a notification only when its transaction commits, and folds identical ones
  within a transaction, so a bulk statement sends one per (entity, customer). It is a wake-up
  only: `change_log` stays the truth, and readers still decide what is committed with the
  snapshot-xmin rule (`db/changelog.py`). `<customer>` is empty when the change names none, and
  `*` for a TRUNCATE (every customer of that table).
- `cache_worker_state`: one row per cache worker, with its heartbeat and the change-log
  watermark below which every change has reached its files. The change-log sensor reads it to
  skip what a live worker has done, and takes over when the heartbeat is old.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NOTIFY_FUNCTION = """
CREATE OR REPLACE FUNCTION crm_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'crm_changes',
        NEW.txid::text || ':' || NEW.entity || ':' ||
        CASE WHEN NEW.op = 'truncate' THEN '*' ELSE coalesce(NEW.customer_id::text, '') END
    );
    RETURN NULL;
END
$$;
CREATE TRIGGER change_log_notify AFTER INSERT ON change_log
FOR EACH ROW EXECUTE FUNCTION crm_notify_change();
"""


def upgrade() -> None:
    op.execute(NOTIFY_FUNCTION)
    op.create_table(
        "cache_worker_state",
        sa.Column("name", sa.Text, nullable=False),
        # Every change with txid below it has reached its cache files (xid8 as text).
        sa.Column("watermark", sa.Text),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cache_worker_state"),
    )


def downgrade() -> None:
    op.drop_table("cache_worker_state")
    op.execute("DROP TRIGGER IF EXISTS change_log_notify ON change_log")
    op.execute("DROP FUNCTION IF EXISTS crm_notify_change()")
