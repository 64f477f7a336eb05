"""Retention of processed webhook events: `webhook_inbox` rows handled long ago are deleted.

An inbox row keeps Meta's notification (a leadgen id, or a whole Messenger message) until it is
handled: processed (`processed_at`) or rejected (`rejected_at`). Once handled, its data lives in
the tables, so the row is only a record of the delivery, and a copy of personal data that must
not be kept for ever (`CRM_INBOX_RETENTION_DAYS`; the Dagster asset `personal_data_retention`
calls `prune_inbox` daily). Pending rows, those with neither time set (rows waiting for
`webhook_leads`, or for a retry after a transient Graph error), are never deleted, however old:
they are work not yet done.

A row's age counts from its latest handling time, not from its arrival. Once it is gone, a
redelivery of the same event (Meta retries a delivery for up to 36 hours) would be stored and
handled again; that is harmless (the writes are upserts), and the retention is days.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, text

__all__ = ["BATCH_SIZE", "prune_inbox"]

# Rows deleted per transaction: each batch holds its row locks for milliseconds, and a large
# backlog (the first run after an upgrade) never becomes one long delete that blocks the
# webhook handler or bloats one transaction.
BATCH_SIZE = 10_000
_SMALLEST_ID = -(2**63)

# One batch, in id order from where the last one ended (the primary key is the index: each batch
# reads on from there rather than scanning the table again). Rows locked by a writer are
# skipped, not waited for: they are being handled now, so they are not expired anyway.
_DELETE_BATCH = text(
    """
    WITH batch AS (
        SELECT id FROM webhook_inbox
        WHERE id > :after
          AND (processed_at IS NOT NULL OR rejected_at IS NOT NULL)
          AND GREATEST(processed_at, rejected_at) < :cutoff
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM webhook_inbox AS inbox USING batch WHERE inbox.id = batch.id
    RETURNING inbox.id
    """
)


def prune_inbox(conn: Connection, older_than: dt.datetime, batch_size: int = BATCH_SIZE) -> int:
    """Delete the processed and rejected inbox rows handled before `older_than` (an aware
    datetime); return how many went. Pending rows are never deleted.

    `conn` must have no transaction open: each batch of `batch_size` rows is its own
    transaction, committed before the next begins.
    """
    if older_than.tzinfo is None or older_than.utcoffset() is None:
        raise ValueError("older_than must be a timezone-aware datetime")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    removed, after = 0, _SMALLEST_ID
    while True:
        with conn.begin():
            ids = (
                conn.execute(
                    _DELETE_BATCH, {"after": after, "cutoff": older_than, "limit": batch_size}
                )
                .scalars()
                .all()
            )
        removed += len(ids)
        if len(ids) < batch_size:
            return removed
        after = max(ids)
