"""Retention of webhook events (`db.inbox_retention.prune_inbox`) on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from sqlalchemy import text

from crm_pipeline.db.inbox_retention import prune_inbox

NOW = dt.datetime.now(dt.UTC)
CUTOFF = NOW - dt.timedelta(days=30)


def _days_ago(days: float | None) -> dt.datetime | None:
    return None if days is None else NOW - dt.timedelta(days=days)


def _store(engine, key: str, received: float, processed=None, rejected=None, error=None) -> int:
    """An inbox row as the webhook handler and webhook_leads leave it (ages in days)."""
    with engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO webhook_inbox (source, event_key, payload, received_at,"
                " processed_at, rejected_at, error)"
                " VALUES ('leadgen', :key, CAST(:payload AS jsonb), :received, :processed,"
                " :rejected, :error) RETURNING id"
            ),
            {
                "key": key,
                "payload": orjson.dumps({"leadgen_id": key, "email": "x@example.com"}).decode(),
                "received": _days_ago(received),
                "processed": _days_ago(processed),
                "rejected": _days_ago(rejected),
                "error": error,
            },
        ).scalar_one()


def _keys(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT event_key FROM webhook_inbox")).scalars())


def test_handled_rows_past_the_cutoff_go_and_pending_rows_never_do(clean_db):
    _store(clean_db, "processed-old", received=41, processed=40)
    _store(clean_db, "rejected-old", received=40, processed=40, rejected=40, error="malformed")
    _store(clean_db, "failed-old", received=45, processed=40, error="(#100) gone")  # permanent
    _store(clean_db, "processed-recent", received=10, processed=9)
    # Received long ago, handled lately: its age counts from the handling.
    _store(clean_db, "handled-late", received=90, processed=5)
    _store(clean_db, "pending-old", received=90)  # never processed: work not yet done
    _store(clean_db, "retrying-old", received=90, error="throttled")  # a transient error

    with clean_db.connect() as conn:
        removed = prune_inbox(conn, CUTOFF)

    assert removed == 3
    assert _keys(clean_db) == {"processed-recent", "handled-late", "pending-old", "retrying-old"}
    with clean_db.connect() as conn:  # a second run finds nothing more
        assert prune_inbox(conn, CUTOFF) == 0


def test_a_backlog_goes_in_batches_each_committed_on_its_own(clean_db):
    for n in range(25):
        _store(clean_db, f"old-{n}", received=50, processed=50)
    _store(clean_db, "pending", received=50)
    with clean_db.connect() as conn:
        assert prune_inbox(conn, CUTOFF, batch_size=10) == 25
        assert not conn.in_transaction()  # nothing left open by the batches
    assert _keys(clean_db) == {"pending"}


def test_a_row_a_writer_holds_is_skipped_not_waited_for(clean_db):
    held = _store(clean_db, "held", received=50, processed=50)
    _store(clean_db, "free", received=50, processed=50)
    with clean_db.connect() as writer:
        writer.execute(text("SELECT 1 FROM webhook_inbox WHERE id = :id FOR UPDATE"), {"id": held})
        with clean_db.connect() as conn:
            # Waiting on the writer's lock would fail here instead of hanging the test.
            conn.exec_driver_sql("SET lock_timeout = '2s'")
            conn.commit()
            try:
                assert prune_inbox(conn, CUTOFF) == 1
            finally:
                conn.exec_driver_sql("RESET lock_timeout")
                conn.commit()
        writer.rollback()
    assert _keys(clean_db) == {"held"}
    with clean_db.connect() as conn:
        assert prune_inbox(conn, CUTOFF) == 1  # the next run takes it


def test_a_naive_cutoff_or_an_open_transaction_is_refused(clean_db):
    with clean_db.connect() as conn:
        with pytest.raises(ValueError, match="timezone-aware"):
            prune_inbox(conn, CUTOFF.replace(tzinfo=None))
        conn.execute(text("SELECT 1"))  # the caller's transaction, now open
        with pytest.raises(Exception, match="already"):
            prune_inbox(conn, CUTOFF)
