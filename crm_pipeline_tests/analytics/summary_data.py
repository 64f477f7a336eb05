"""Test data for summary.json: campaigns, ads, daily insights, leads and orders around TODAY,
linked to the demo customers, each row placed to exercise one bound, join or ordering."""

import datetime as dt
from decimal import Decimal

from sqlalchemy import Connection, Engine, text

from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert

# A fixed day inside the demo orders' span (Feb..Nov 2026): orders exist before the 30-day
# window, inside it and after it (future-dated), so both window bounds are exercised.
TODAY = dt.date(2026, 6, 15)
UTC = dt.UTC


def at(day_offset: int, hour: int = 12, minute: int = 0, second: int = 0) -> dt.datetime:
    """`day_offset` days from TODAY at the given UTC time."""
    day = TODAY + dt.timedelta(days=day_offset)
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def seed_marketing(engine: Engine) -> None:
    """Campaigns, ads, daily insights and leads around TODAY, linked to demo customers."""
    with engine.begin() as conn:
        ids = conn.execute(text("SELECT id FROM customers ORDER BY id")).scalars().all()
        a, b, c, d, e = ids[:5]
        _seed_campaigns_and_ads(conn)
        bulk_upsert(conn, schema.ad_insights_daily, _insights())
        bulk_upsert(conn, schema.leads, _leads(a, b, c, d, e))
        # Orders around A's first touch, and a customer whose tier sorts differently in "C"
        # and in natural-language collations.
        bulk_upsert(conn, schema.orders, _orders(a, d), key=["external_id"])
        bulk_upsert(
            conn, schema.customers, [{"email": "zed@example.com", "tier": "Zeta"}], key=["email"]
        )


def _seed_campaigns_and_ads(conn: Connection) -> None:
    bulk_upsert(
        conn,
        schema.campaigns,
        [
            {"id": "c1", "account_id": "act_1", "name": "Spring Sale"},
            {"id": "c2", "account_id": "act_1", "name": "Brand | Awareness"},
            {"id": "c4", "account_id": "act_2", "name": "No spend yet"},
        ],  # c3 has spend but no campaigns row: its name is null
    )
    bulk_upsert(
        conn,
        schema.ads,
        [
            {"id": "a1", "account_id": "act_1", "campaign_id": "c1", "adset_id": "s1"},
            {"id": "a2", "account_id": "act_1", "campaign_id": "c2", "adset_id": "s2"},
            {"id": "a3", "account_id": "act_2", "campaign_id": "c3", "adset_id": "s3"},
        ],
    )


def _insights() -> list[dict]:
    insights = []
    for i in range(-2, 45):  # two future days, today, and 44 days back
        day = TODAY - dt.timedelta(days=i)
        insights.append(
            {"account_id": "act_1", "campaign_id": "c1", "adset_id": "s1", "ad_id": "a1",
             "date": day, "impressions": 1000 + i, "clicks": 30 + i % 7,
             "spend": Decimal(1234 + 37 * i) / 1000, "leads": i % 3}
        )  # fmt: skip
        insights.append(
            {"account_id": "act_1", "campaign_id": "c2", "adset_id": "s2", "ad_id": "a2",
             "date": day, "impressions": 500, "clicks": 5, "spend": Decimal("3.3333"),
             "leads": 0}
        )  # fmt: skip
        if i % 10 == 0:
            insights.append(
                {"account_id": "act_2", "campaign_id": "c3", "adset_id": "s3", "ad_id": "a3",
                 "date": day, "impressions": 10, "clicks": 1, "spend": Decimal("0.0100"),
                 "leads": 1}
            )  # fmt: skip
    return insights


def _leads(a: int, b: int, c: int, d: int, e: int) -> list[dict]:
    lead = dict.fromkeys(("form_id", "ad_id", "campaign_id", "customer_id", "created_time"))
    return [
        # A's first touch: c1 through the ad (no campaign_id on the lead).
        {**lead, "id": "L1", "form_id": "f1", "ad_id": "a1", "customer_id": a,
         "created_time": at(-40)},
        {**lead, "id": "L2", "form_id": "f1", "campaign_id": "c2", "customer_id": a,
         "created_time": at(-5)},
        # B: an "other" lead naming c2, long before the window.
        {**lead, "id": "L3", "campaign_id": "c2", "customer_id": b, "created_time": at(-100)},
        # C: c3 via its ad, on the window's last day just before midnight UTC.
        {**lead, "id": "L4", "form_id": "f2", "ad_id": "a3", "customer_id": c,
         "created_time": at(0, 23, 30)},
        {**lead, "id": "L5", "form_id": "f1", "created_time": at(-3)},
        # D: no campaign at all; exactly the window's first instant.
        {**lead, "id": "L6", "customer_id": d, "created_time": at(-29, 0)},
        # E: c4 (no spend), no created_time: all of E's orders count.
        {**lead, "id": "L7", "form_id": "f3", "campaign_id": "c4", "customer_id": e},
        # One second before the window, and one in the future: both outside it.
        {**lead, "id": "L8", "form_id": "f1", "created_time": at(-30, 23, 59, 59)},
        {**lead, "id": "L9", "created_time": at(1)},
    ]  # fmt: skip


def _orders(a: int, d: int) -> list[dict]:
    return [
        {"external_id": "T-1", "customer_id": a, "amount": Decimal("100.00"),
         "currency": "USD", "status": "paid", "created_at": at(-41)},
        {"external_id": "T-2", "customer_id": a, "amount": Decimal("250.05"),
         "currency": "USD", "status": "shipped", "created_at": at(-40, 12, 0, 1)},
        {"external_id": "T-3", "customer_id": a, "amount": Decimal("75.00"),
         "currency": "USD", "status": "refunded", "created_at": at(-2)},
        {"external_id": "T-4", "customer_id": d, "amount": Decimal("19.99"),
         "currency": "USD", "status": "completed", "created_at": at(-29, 0)},
    ]  # fmt: skip
