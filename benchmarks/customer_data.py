"""Customers for the cache benchmarks (B3, B5, B7): seeded data, their cache files, writes.

`seed_customers` fills a migrated database with a realistic fan-out per customer;
`materialize_profiles` runs the real `customer_profiles_cache` asset over it; the rest are
the small steps the latency benchmarks repeat (rename a customer, read the name back).
"""

from __future__ import annotations

import time
from pathlib import Path

import harness  # first: puts the repo root on sys.path
import orjson
import psycopg
from sqlalchemy import text

from crm_pipeline.db.engine import get_engine
from crm_pipeline.db.rollups import rebuild_rollups

# Integers are formatted into the SQL below (never user input): no placeholders needed.
SEED_SQL = """
SELECT setseed(0.42);
INSERT INTO campaigns (id, account_id, name, status, objective, created_time)
SELECT 'cmp' || g, 'act_1', 'Campaign ' || g, 'ACTIVE', 'LEAD_GENERATION',
       now() - make_interval(days => 90)
FROM generate_series(1, 20) g;
INSERT INTO adsets (id, account_id, campaign_id, name, status)
SELECT 'set' || g, 'act_1', 'cmp' || (1 + g % 20), 'Ad set ' || g, 'ACTIVE'
FROM generate_series(1, 50) g;
INSERT INTO ads (id, account_id, campaign_id, adset_id, name, status)
SELECT 'ad' || g, 'act_1', 'cmp' || (1 + (g % 50) % 20), 'set' || (1 + g % 50), 'Ad ' || g,
       'ACTIVE'
FROM generate_series(1, 100) g;
INSERT INTO customers (id, name, email, phone, tier, fb_psid, created_at, updated_at)
SELECT g, 'Customer ' || g, 'customer' || g || '@example.com', '+1555' || lpad(g::text, 7, '0'),
       (ARRAY['standard', 'standard', 'silver', 'gold'])[1 + g % 4],
       CASE WHEN g % 3 = 0 THEN NULL ELSE 'psid' || g END,
       now() - make_interval(days => g % 700), now() - make_interval(hours => g % 5000)
FROM generate_series(1, {n}) g;
SELECT setval(pg_get_serial_sequence('customers', 'id'), {n});
INSERT INTO leads (id, form_id, ad_id, created_time, email, phone, full_name, field_data,
                   customer_id, page_id, campaign_id)
SELECT 'lead' || g, 'form' || (1 + g % 5),
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'ad' || (1 + g % 100) END,
       now() - make_interval(mins => g * 3), 'lead' || g || '@example.com',
       '+1666' || lpad(g::text, 7, '0'), 'Lead Person ' || g,
       jsonb_build_array(
           jsonb_build_object('name', 'email', 'values',
                              jsonb_build_array('lead' || g || '@example.com')),
           jsonb_build_object('name', 'full_name', 'values',
                              jsonb_build_array('Lead Person ' || g)),
           jsonb_build_object('name', 'budget', 'values', jsonb_build_array('1000-5000'))),
       CASE WHEN g % 10 = 0 THEN NULL ELSE 1 + floor(random() * {n})::bigint END,
       'page1', NULL
FROM generate_series(1, {n} * 3 / 2) g;
INSERT INTO orders (id, external_id, customer_id, amount, currency, status, created_at)
SELECT g, 'ord' || g, 1 + floor(random() * {n})::bigint, round((random() * 500)::numeric, 2),
       'USD', (ARRAY['paid', 'paid', 'paid', 'refunded', 'pending'])[1 + g % 5],
       now() - make_interval(mins => g)
FROM generate_series(1, {n} * 5) g;
SELECT setval(pg_get_serial_sequence('orders', 'id'), {n} * 5);
INSERT INTO conversations (id, page_id, customer_id, updated_time, psid)
SELECT 't_' || g, 'page1',
       CASE WHEN g % 12 = 0 THEN NULL ELSE 1 + floor(random() * {n})::bigint END,
       now() - make_interval(mins => g), 'psid' || g
FROM generate_series(1, {n} * 6 / 5) g;
INSERT INTO messages (id, conversation_id, from_id, text, created_time)
SELECT 'm_' || g, 't_' || (1 + floor(random() * ({n} * 6 / 5))::bigint),
       CASE WHEN g % 2 = 0 THEN 'page1' ELSE 'psid' || g END,
       'Hello, this is message number ' || g || ' about my order and delivery times.',
       now() - make_interval(secs => g * 7)
FROM generate_series(1, {n} * 10) g;
-- History the triggers would have written (seeding bypasses them for speed).
INSERT INTO change_log (entity, entity_key, op, customer_id)
SELECT 'customers', g::text, 'insert', g FROM generate_series(1, {n}) g;
"""


def seed_customers(url: str, customers: int) -> dict[str, int]:
    """Seed `customers` customers with their leads, orders and conversations; row counts."""
    with psycopg.connect(harness.libpq(url)) as conn:
        # Replica mode skips the change-log triggers and FK checks while bulk seeding
        # (consistent data by construction); the change_log history is written explicitly.
        conn.execute("SET session_replication_role = replica")
        conn.execute(SEED_SQL.format(n=int(customers)))
        conn.commit()
    # The KPI rollups the triggers would have kept: filled from the seeded rows.
    with get_engine(url).begin() as conn:
        rebuild_rollups(conn)
    with psycopg.connect(harness.libpq(url), autocommit=True) as conn:
        conn.execute("ANALYZE")
        tables = ("customers", "leads", "orders", "conversations", "messages")
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def profiles_run(url: str, cache_dir: Path, ids: list[int] | None = None) -> dict:
    """The arguments of `dagster.materialize` for the real `customer_profiles_cache` asset
    (every customer when `ids` is None), built once so that a timed loop only runs it."""
    from crm_pipeline.defs.cache.assets import customer_profiles_cache
    from crm_pipeline.defs.resources import PostgresResource, StorageResource

    return {
        "assets": [customer_profiles_cache],
        "resources": {
            "postgres": PostgresResource(database_url=url),
            "storage": StorageResource(
                data_dir=str(cache_dir.parent / "data"), cache_dir=str(cache_dir)
            ),
        },
        "run_config": {
            "ops": {"customer_profiles_cache": {"config": {"customer_ids": ids}}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
    }


def materialize_profiles(url: str, cache_dir: Path, ids: list[int] | None = None):
    """Run the real `customer_profiles_cache` asset (full when `ids` is None)."""
    import dagster as dg

    result = dg.materialize(**profiles_run(url, cache_dir, ids))
    if not result.success:
        raise SystemExit("customer_profiles_cache failed")
    return result


def rename_customer(engine, customer_id: int, name: str) -> float:
    """Set a customer's name as psql would (one committed UPDATE); the perf_counter reading
    taken once the commit has returned, where a write -> file latency starts."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE customers SET name = :n WHERE id = :i"), {"n": name, "i": customer_id}
        )
    return time.perf_counter()


def name_in_file(path: Path) -> str | None:
    """The customer name a cache file holds, or None while it is missing or half-written."""
    try:
        return orjson.loads(path.read_bytes())["customer"]["name"]
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError):
        return None
