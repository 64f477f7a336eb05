import datetime as dt
import threading

import pyarrow as pa
from sqlalchemy import text

from crm_pipeline.db import schema
from crm_pipeline.db.changelog import read_change_window, reflected_watermark
from crm_pipeline.db.upsert import bulk_upsert


def _changes(conn):
    return conn.execute(
        text("SELECT entity, entity_key, op, row_count FROM change_log ORDER BY id")
    ).all()


def test_row_triggers_log_every_write_from_plain_sql(clean_db):
    with clean_db.begin() as conn:
        cid = conn.execute(
            text("INSERT INTO customers (name, email) VALUES ('A', 'a@x.io') RETURNING id")
        ).scalar_one()
        conn.execute(text("UPDATE customers SET tier = 'gold' WHERE id = :id"), {"id": cid})
        conn.execute(text("UPDATE customers SET tier = 'gold' WHERE id = :id"), {"id": cid})
        conn.execute(
            text("INSERT INTO orders (external_id, customer_id, amount) VALUES ('o1', :id, 10)"),
            {"id": cid},
        )
        conn.execute(text("DELETE FROM orders"))
        assert _changes(conn) == [
            ("customers", str(cid), "insert", 1),
            ("customers", str(cid), "update", 1),  # the no-op second update logs nothing
            ("orders", "1", "insert", 1),
            ("orders", "1", "delete", 1),
        ]


def test_bulk_insights_load_writes_one_change_row_per_account_and_day(clean_db):
    days, ads = 10, 5_000
    base = dt.date(2026, 1, 1)
    rows = pa.table(
        {
            "account_id": ["1001"] * (days * ads),
            "campaign_id": ["c"] * (days * ads),
            "adset_id": ["s"] * (days * ads),
            "ad_id": [f"ad{i % ads}" for i in range(days * ads)],
            "date": [(base + dt.timedelta(days=i // ads)).isoformat() for i in range(days * ads)],
            "impressions": ["10"] * (days * ads),
        }
    )
    with clean_db.begin() as conn:
        bulk_upsert(conn, schema.ad_insights_daily, rows)
        logged = _changes(conn)
    assert len(logged) == days
    assert {r.op for r in logged} == {"insert"}
    assert sum(r.row_count for r in logged) == days * ads
    assert {r.entity_key for r in logged} == {
        f"1001/{base + dt.timedelta(days=d)}" for d in range(days)
    }

    # Re-syncing the same rows changes nothing and logs nothing.
    with clean_db.begin() as conn:
        bulk_upsert(conn, schema.ad_insights_daily, rows)
        assert len(_changes(conn)) == days


def _insert_customer(engine, email: str, written: threading.Event, go: threading.Event):
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO customers (email) VALUES (:e)"), {"e": email})
        written.set()
        go.wait(10)  # hold the transaction open until the test lets it commit


def test_change_window_never_skips_a_late_commit(clean_db):
    """Transaction A logs first (lower id and txid) but commits after B. An `id > cursor`
    reader that ran in between loses A's change; the xid8 window does not."""
    with clean_db.connect() as conn:
        start = read_change_window(conn, None).upto

    a_go, a_written = threading.Event(), threading.Event()
    a = threading.Thread(target=_insert_customer, args=(clean_db, "a@x.io", a_written, a_go))
    a.start()
    assert a_written.wait(10)
    with clean_db.begin() as conn:  # B: later id, commits first
        conn.execute(text("INSERT INTO customers (email) VALUES ('b@x.io')"))

    with clean_db.connect() as conn:
        naive_seen = conn.execute(text("SELECT id, entity_key FROM change_log ORDER BY id")).all()
        window1 = read_change_window(conn, start)
        conn.rollback()
    naive_cursor = max(r.id for r in naive_seen)

    a_go.set()
    a.join()
    with clean_db.connect() as conn:
        window2 = read_change_window(conn, window1.upto)
        naive_next = conn.execute(
            text("SELECT count(*) FROM change_log WHERE id > :c"), {"c": naive_cursor}
        ).scalar_one()
        total = conn.execute(text("SELECT count(*) FROM change_log")).scalar_one()

    seen = sum(e.changes for e in window1.entities) + sum(e.changes for e in window2.entities)
    assert total == 2
    assert seen == 2, "the xid8 window must deliver both changes exactly once"
    assert len(naive_seen) + naive_next == 1, "the naive id cursor demonstrably loses A's change"


def test_reflected_watermark_moves_only_when_something_is_written(clean_db):
    with clean_db.connect() as conn:
        w1 = reflected_watermark(conn)
    with clean_db.begin() as conn:
        conn.execute(text("SELECT 1"))
    with clean_db.connect() as conn:
        assert reflected_watermark(conn) == w1
    with clean_db.begin() as conn:
        conn.execute(text("INSERT INTO customers (email) VALUES ('w@x.io')"))
    with clean_db.connect() as conn:
        assert int(reflected_watermark(conn)) > int(w1)
