"""The triggers keep every rollup equal to a full recomputation, through plain SQL writes of
every kind (as psql or another app would send them), multi-row statements and TRUNCATE.

After each statement the stored rollups are compared with an independent Python computation
over the raw rows (`expected_rollups.py`) and with the drift check's SQL recomputation.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline_tests.analytics.summary_data import TODAY
from crm_pipeline_tests.rollups.expected_rollups import assert_consistent

ORDER_STEPS = [
    ("multi-row insert naming contract columns only",
     "INSERT INTO orders (customer_id, amount, currency, status, created_at)"
     " SELECT id, 10.00 + id % 7, 'USD', 'paid', now() - interval '3 days' FROM customers"),
    ("insert leaving currency, status and created_at to their defaults",
     "INSERT INTO orders (customer_id, amount) VALUES (:a, 5.55), (:b, 6.66)"),
    ("status change", "UPDATE orders SET status = 'refunded'"
     " WHERE id IN (SELECT id FROM orders WHERE status = 'paid' ORDER BY id LIMIT 3)"),
    ("amount change", "UPDATE orders SET amount = amount + 1.11 WHERE customer_id = :a"),
    ("currency change",
     "UPDATE orders SET currency = 'EUR' WHERE id = (SELECT max(id) FROM orders)"),
    ("day change", "UPDATE orders SET created_at = created_at - interval '40 days'"
     " WHERE customer_id = :b"),
    ("order moves to another customer", "UPDATE orders SET customer_id = :c"
     " WHERE id = (SELECT min(id) FROM orders WHERE customer_id = :a)"),
    ("update that changes nothing the rollups read", "UPDATE orders SET external_id = external_id"),
    ("customers change tier", "UPDATE customers SET tier = 'platinum' WHERE id IN (:a, :b)"),
    ("tier change and rename of every customer in one statement",
     "UPDATE customers SET tier = CASE WHEN id % 2 = 0 THEN 'gold' ELSE tier END,"
     " name = coalesce(name, '') || '!'"),
    ("delete every order of a customer (their keys reach zero)",
     "DELETE FROM orders WHERE customer_id = :b"),
]  # fmt: skip
ATTRIBUTION_STEPS = [
    ("an earlier lead moves A's first touch", "INSERT INTO leads (id, customer_id, campaign_id,"
     " created_time) VALUES ('R1', :a, 'c2', now() - interval '400 days')"),
    ("lead through an ad not synced yet", "INSERT INTO leads (id, customer_id, ad_id, created_time)"
     " VALUES ('R2', :d, 'a9', now() - interval '500 days')"),
    ("the ad arrives", "INSERT INTO ads (id, account_id, campaign_id, adset_id)"
     " VALUES ('a9', 'act_1', 'c1', 's1')"),
    ("an ad moves to another campaign", "UPDATE ads SET campaign_id = 'c3' WHERE id = 'a1'"),
    ("an ad is deleted", "DELETE FROM ads WHERE id = 'a9'"),
    ("a lead changes customer", "UPDATE leads SET customer_id = :e WHERE id = 'R1'"),
    ("a lead loses its created_time", "UPDATE leads SET created_time = NULL WHERE id = 'L4'"),
    ("leads without a created_time", "INSERT INTO leads (id, form_id, customer_id, campaign_id)"
     " VALUES ('R3', 'f9', :c, 'c4'), ('R4', NULL, NULL, NULL)"),
    ("leads are deleted", "DELETE FROM leads WHERE id IN ('L1', 'R2')"),
    ("a customer and their lead in one statement",
     "WITH c AS (INSERT INTO customers (email, tier) VALUES ('gone@example.com', 'gold')"
     " RETURNING id)"
     " INSERT INTO leads (id, customer_id, campaign_id) SELECT 'R5', id, 'c1' FROM c"),
    # Each CTE is read by the next, so PostgreSQL fires the orders trigger, then the leads one,
    # then the customers one: the first two run before the customer has a keys row.
    ("a customer, their order and their lead in one statement, the customer last",
     "WITH o AS (INSERT INTO orders (customer_id, amount) VALUES (777777, 12.34)"
     " RETURNING customer_id), l AS (INSERT INTO leads (id, customer_id, campaign_id,"
     " created_time) SELECT 'R6', customer_id, 'c2', now() - interval '1 day' FROM o"
     " RETURNING customer_id) INSERT INTO customers (id, email, tier)"
     " SELECT customer_id, 'cte@example.com', 'silver' FROM l"),
    ("... and is deleted (its leads lose their customer)",
     "DELETE FROM customers WHERE email = 'gone@example.com'"),
    ("a customer's id changes", "UPDATE customers SET id = 999999 WHERE email = 'zed@example.com'"),
]  # fmt: skip
INSIGHT_STEPS = [
    ("the newest synced_at of a day moves up",
     "UPDATE ad_insights_daily SET synced_at = now() + interval '1 hour'"
     " WHERE ad_id = 'a1' AND date = :day"),
    ("... and back down by an update", "UPDATE ad_insights_daily"
     " SET synced_at = synced_at - interval '1 day' WHERE ad_id = 'a1' AND date = :day"),
    ("the row holding a day's newest synced_at is deleted",
     "UPDATE ad_insights_daily SET synced_at = now() + interval '2 hours'"
     " WHERE ad_id = 'a2' AND date = :day; DELETE FROM ad_insights_daily"
     " WHERE ad_id = 'a2' AND date = :day"),
    ("an ad's rows move to another campaign", "UPDATE ad_insights_daily SET campaign_id = 'c9'"
     " WHERE ad_id = 'a3'"),
    ("a campaign's only rows are deleted",
     "DELETE FROM ad_insights_daily WHERE campaign_id = 'c9'"),
]  # fmt: skip


def _run_steps(engine: Engine, steps: list[tuple[str, str]], params: dict) -> None:
    for label, statement in steps:
        with engine.begin() as conn:
            for part in statement.split("; "):
                conn.execute(text(part), params)
        assert_consistent(engine, label)


def _params(people: list[int]) -> dict:
    a, b, c, d, e = people
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "day": TODAY - dt.timedelta(days=3)}


def test_migrated_and_seeded_database_is_consistent(seeded):
    rollups = assert_consistent(seeded, "seeded")
    # Not vacuously equal: every rollup has rows, and attribution both ways (lead, ad).
    assert all(rollups.values()), [t for t, rows in rollups.items() if not rows]
    assert {c for (c,) in rollups["rollup_attributed_customers"]} == {"c1", "c2", "c3", "c4"}


def test_order_and_customer_writes(seeded, people):
    _run_steps(seeded, ORDER_STEPS, _params(people))


def test_lead_ad_and_customer_writes_move_first_touch(seeded, people):
    before = assert_consistent(seeded)["rollup_customer_keys"]
    _run_steps(seeded, ATTRIBUTION_STEPS, _params(people))
    after = assert_consistent(seeded)["rollup_customer_keys"]
    assert before[(people[0],)][1] == "c1" and after[(people[0],)][1] != "c1"


def test_insight_writes_and_the_newest_synced_at(seeded, people):
    _run_steps(seeded, INSIGHT_STEPS, _params(people))


def test_upserts_of_the_sync_path(seeded):
    day = TODAY - dt.timedelta(days=1)
    with seeded.begin() as conn:  # INSERT ... ON CONFLICT DO UPDATE: both statement triggers
        bulk_upsert(
            conn,
            schema.ad_insights_daily,
            [{"account_id": "act_1", "campaign_id": "c1", "adset_id": "s1", "ad_id": "a1",
              "date": day, "impressions": 1, "clicks": 1, "spend": Decimal("99.1234"),
              "leads": 7},
             {"account_id": "act_1", "campaign_id": "c5", "adset_id": "s5", "ad_id": "a5",
              "date": day, "impressions": 2, "clicks": 0, "spend": Decimal("1.0000"),
              "leads": 0}],
        )  # fmt: skip
        bulk_upsert(
            conn,
            schema.leads,
            [{"id": "L2", "customer_id": None}, {"id": "N1", "form_id": "f1", "ad_id": "a2"}],
        )
    assert_consistent(seeded, "upserts")


@pytest.mark.parametrize(
    ("statement", "emptied"),
    [
        ("TRUNCATE orders", ["rollup_orders_daily", "rollup_tier_revenue",
                             "rollup_attributed_revenue"]),
        ("TRUNCATE leads", ["rollup_leads_daily", "rollup_leads_by_source",
                            "rollup_attributed_customers", "rollup_attributed_revenue"]),
        ("TRUNCATE ads", ["rollup_ad_campaigns"]),
        ("TRUNCATE ad_insights_daily", ["rollup_ad_insights_daily"]),
        ("TRUNCATE customers CASCADE", ["rollup_customers_by_tier", "rollup_customer_keys",
                                        "rollup_orders_daily", "rollup_attributed_customers"]),
    ],
)  # fmt: skip
def test_truncate_resets_what_the_table_feeds(seeded, statement, emptied):
    with seeded.begin() as conn:
        conn.execute(text(statement))
    rollups = assert_consistent(seeded, statement)
    assert all(not rollups[table] for table in emptied)


def test_an_update_that_changes_nothing_they_read_leaves_the_rollups_alone(seeded):
    def versions(conn) -> dict[str, list]:
        return {
            table: conn.execute(text(f"SELECT xmin::text FROM {table} ORDER BY 1")).all()
            for table in ("rollup_orders_daily", "rollup_leads_daily", "rollup_customer_keys")
        }

    with seeded.connect() as conn:
        before = versions(conn)
    with seeded.begin() as conn:
        conn.execute(text("UPDATE orders SET external_id = external_id"))
        conn.execute(text("UPDATE leads SET email = coalesce(email, '') || 'x'"))
        conn.execute(text("UPDATE customers SET phone = '+10000000000'"))
    with seeded.connect() as conn:
        assert versions(conn) == before  # no row rewritten, no lock taken
