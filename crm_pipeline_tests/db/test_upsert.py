import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from sqlalchemy import select, text

from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert, bulk_upsert_by


def _insight(ad: int, day: int, spend: str = "1.50", clicks: str = "3") -> dict:
    return {
        "account_id": "1001",
        "campaign_id": "c1",
        "adset_id": "s1",
        "ad_id": f"ad{ad}",
        "date": (dt.date(2026, 3, 1) + dt.timedelta(days=day)).isoformat(),
        "impressions": "100",
        "clicks": clicks,
        "spend": spend,
        "reach": None,
    }


def _table_state(conn):
    t = schema.ad_insights_daily
    cols = [c for c in t.c if c.name != "synced_at"]
    return conn.execute(select(*cols).order_by(t.c.ad_id, t.c.date)).all()


def test_upsert_is_idempotent(clean_db):
    rows = [_insight(ad, day) for ad in range(20) for day in range(5)]
    with clean_db.begin() as conn:
        first = bulk_upsert(conn, schema.ad_insights_daily, rows)
        state = _table_state(conn)
    with clean_db.begin() as conn:
        second = bulk_upsert(conn, schema.ad_insights_daily, rows)
        assert _table_state(conn) == state
    assert (first.inserted, first.updated) == (100, 0)
    assert (second.inserted, second.updated, second.unchanged) == (0, 0, 100)
    assert state[0].spend == Decimal("1.50") and isinstance(state[0].spend, Decimal)
    assert state[0].reach is None


def test_upsert_updates_changed_rows_only(clean_db):
    with clean_db.begin() as conn:
        bulk_upsert(conn, schema.ad_insights_daily, [_insight(1, 0), _insight(2, 0)])
    with clean_db.begin() as conn:
        result = bulk_upsert(
            conn, schema.ad_insights_daily, [_insight(1, 0, spend="9.99"), _insight(2, 0)]
        )
        spends = dict(conn.execute(text("SELECT ad_id, spend FROM ad_insights_daily")).all())
    assert (result.inserted, result.updated, result.unchanged) == (0, 1, 1)
    assert spends == {"ad1": Decimal("9.99"), "ad2": Decimal("1.50")}


def test_duplicate_keys_in_one_load_keep_the_last(clean_db):
    rows = [_insight(1, 0, clicks="1"), _insight(1, 0, clicks="2"), _insight(1, 0, clicks="3")]
    with clean_db.begin() as conn:
        result = bulk_upsert(conn, schema.ad_insights_daily, pa.Table.from_pylist(rows))
        clicks = conn.execute(text("SELECT clicks FROM ad_insights_daily")).scalar_one()
    assert result.inserted == 1
    assert clicks == 3


def test_nulls_and_empty_strings_survive_copy(clean_db):
    rows = [
        {"name": "", "email": "a@example.com", "phone": None, "tier": "gold"},
        {
            "name": 'Quote "Q" O\'Neil, Jr.\nline2',
            "email": "b@example.com",
            "phone": "+1",
            "tier": "bronze",
        },
    ]
    with clean_db.begin() as conn:
        bulk_upsert(conn, schema.customers, rows, key=["email"])
        got = conn.execute(text("SELECT name, phone FROM customers ORDER BY email")).all()
    assert got == [("", None), ('Quote "Q" O\'Neil, Jr.\nline2', "+1")]


def test_bad_input_stores_nothing_and_says_why(clean_db):
    with clean_db.begin() as conn:
        bulk_upsert(conn, schema.ad_insights_daily, [_insight(1, 0)])
    with pytest.raises(ValueError, match="no column"), clean_db.begin() as conn:
        bulk_upsert(conn, schema.ad_insights_daily, [{**_insight(2, 0), "bogus": 1}])
    with pytest.raises(Exception, match="invalid input syntax"), clean_db.begin() as conn:
        bulk_upsert(conn, schema.ad_insights_daily, [_insight(3, 0), _insight(4, 0, spend="abc")])
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT ad_id FROM ad_insights_daily")).scalars().all() == ["ad1"]


def test_upsert_by_group_counts_each_group_as_its_own_upsert(clean_db):
    # Day 0: 3 rows already stored (one will change); day 1: 2 stored, unchanged; day 2: new.
    with clean_db.begin() as conn:
        bulk_upsert(conn, schema.ad_insights_daily, [_insight(a, 0) for a in range(3)])
        bulk_upsert(conn, schema.ad_insights_daily, [_insight(a, 1) for a in range(2)])
    rows = (
        [_insight(0, 0, spend="7.00"), _insight(1, 0), _insight(2, 0), _insight(3, 0)]
        + [_insight(a, 1) for a in range(2)]
        + [_insight(a, 2) for a in range(4)]
    )
    with clean_db.begin() as conn:
        by_day = bulk_upsert_by(conn, schema.ad_insights_daily, pa.Table.from_pylist(rows), "date")
        stored = conn.execute(text("SELECT count(*) FROM ad_insights_daily")).scalar_one()
    counts = {day: (r.staged, r.inserted, r.updated, r.unchanged) for day, r in by_day.items()}
    assert counts == {
        "2026-03-01": (4, 1, 1, 2),
        "2026-03-02": (2, 0, 0, 2),
        "2026-03-03": (4, 4, 0, 0),
    }
    assert stored == 4 + 2 + 4
