"""`make demo`: the whole graph on embedded defaults, with deterministic demo CRM data.

The Graph API side is a Graph API emulator process of its own, started before the definitions
are loaded so that their account partitions are the accounts it serves
(`crm_pipeline.local_emulator`).
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from sqlalchemy import Engine, select, text

from crm_pipeline.config import ConfigError, Settings, load_settings, redact_url
from crm_pipeline.db import migrate, schema
from crm_pipeline.db.demo_mark import claim_for_demo
from crm_pipeline.db.engine import get_engine, resolve_database_url
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.local_emulator import LocalEmulator, emulator_in_this_process
from crm_pipeline.progress import Progress

DEMO_SEED = 2026
TIERS = ("bronze", "silver", "gold", "platinum")
FIRST_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Eun", "Femi", "Gita", "Hugo", "Ines", "Jon")
LAST_NAMES = ("Alvarez", "Brown", "Chen", "Dubois", "Eze", "Fischer", "Gupta", "Haddad")


def demo_crm_rows(customers: int = 40, orders: int = 120) -> tuple[list[dict], list[dict]]:
    """Deterministic demo customers and orders (orders reference customers by email)."""
    rng = random.Random(DEMO_SEED)
    people = []
    for i in range(customers):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        people.append(
            {
                "name": f"{first} {last}",
                "email": f"{first}.{last}.{i:03d}@example.com".lower(),
                "phone": f"+1555{i:07d}",
                "tier": rng.choices(TIERS, weights=(50, 30, 15, 5))[0],
                "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i),
            }
        )
    sales = []
    for i in range(orders):
        sales.append(
            {
                "external_id": f"DEMO-{i + 1:05d}",
                "email": rng.choice(people)["email"],
                "amount": Decimal(rng.randrange(1_500, 45_000)) / 100,
                "currency": "USD",
                "status": rng.choices(("paid", "refunded", "cancelled"), weights=(90, 6, 4))[0],
                "created_at": dt.datetime(2026, 2, 1, 12, tzinfo=dt.UTC)
                + dt.timedelta(hours=61 * i),
            }
        )
    return people, sales


def seed_demo_crm(engine: Engine) -> dict[str, int]:
    """Upsert the demo customers and orders on their natural keys (idempotent); return how many."""
    people, sales = demo_crm_rows()
    with engine.begin() as conn:
        bulk_upsert(conn, schema.customers, people, key=["email"])
        ids = dict(conn.execute(select(schema.customers.c.email, schema.customers.c.id)).all())
        order_rows = [
            {**{k: v for k, v in o.items() if k != "email"}, "customer_id": ids[o["email"]]}
            for o in sales
        ]
        bulk_upsert(conn, schema.orders, order_rows, key=["external_id"])
    return {"customers": len(people), "orders": len(order_rows)}


def run_demo(days: int = 7) -> int:
    """Migrate, seed, sync the last `days` days from the emulator, build the caches; report.

    Always an emulator process of its own, and only into a database made for a demo (the
    embedded one by default): its invented customers and campaigns never mix with real data.
    """
    if load_settings().production:
        raise ConfigError("CRM_ENV=production: the demo writes fake data and does not run")
    with emulator_in_this_process(load_settings(), demo=True) as emulator:
        settings = load_settings()  # now pointed at the emulator, Meta's token dropped
        url = resolve_database_url(settings)
        revision = migrate.upgrade(url)
        with get_engine(url).begin() as conn:
            claim_for_demo(conn)
        print(f"crm-pipeline demo: demo data from the Graph API emulator into {redact_url(url)}")
        crm = seed_demo_crm(get_engine(url))
        report = _sync_days(settings, url, days)
    print(_summary(settings, url, revision, crm, report, emulator))
    return 0


def _sync_days(settings: Settings, url: str, days: int):
    """Sync the last `days` days (today included) from the emulator, and build the caches."""
    # Only now: the definitions read their account partitions from the emulator's accounts.
    from crm_pipeline import orchestrate

    today = dt.datetime.now(dt.UTC).date()
    keys = orchestrate.days_between(today - dt.timedelta(days=days - 1), today)
    instance = orchestrate.local_instance(settings)
    with (
        orchestrate.graph_resource(settings) as graph_api,
        Progress("demo sync", unit="account-days") as progress,  # stderr; stdout: the summary
    ):
        resources = orchestrate.standard_resources(settings, graph_api)
        return orchestrate.sync_facebook(
            keys, resources=resources, instance=instance, database_url=url, progress=progress
        )


def _table_counts(url: str) -> tuple[int, ...]:
    """Rows of customers, orders, ad_insights_daily, ads, leads, conversations, messages."""
    with get_engine(url).connect() as conn:
        return conn.execute(
            text(
                "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders),"
                " (SELECT count(*) FROM ad_insights_daily), (SELECT count(*) FROM ads),"
                " (SELECT count(*) FROM leads), (SELECT count(*) FROM conversations),"
                " (SELECT count(*) FROM messages)"
            )
        ).one()


def _summary(
    settings: Settings, url: str, revision: str, crm: dict, report, emulator: LocalEmulator
) -> str:
    customers, orders, insight_rows, ads, leads, chats, messages = _table_counts(url)
    keys, files = report.days, report.cache_files
    accounts = ", ".join(emulator.ad_account_ids)
    return f"""
crm-pipeline demo: done.
  database        {redact_url(url)} (migrated to {revision})
  customers       {customers}, orders {orders} (seeded {crm["customers"]} and {crm["orders"]};
                  the other customers came in as Lead Ads leads)
  insights        {report.insight_rows} rows for {keys[0]}..{keys[-1]} from the emulator
                  ({report.inserted} new, {report.updated} updated; {report.api_calls} API calls)
                  ad_insights_daily now holds {insight_rows} rows
  facebook        {ads} ads, {leads} Lead Ads leads, {chats} conversations with {messages} messages
                  (ad accounts {accounts} and Page {emulator.page_id}, as the emulator lists them)
  raw parquet     {settings.data_dir / "raw" / "fb_ad_insights"}/
  cache files     {files["marketing_insights_cache"]}
                  {files["analytics_summary"]}
                  {files["customer_index_cache"]}.json and {files["customer_index_cache"]}/<n>.json
                  {files["customer_profiles_cache"]}/<id>.json

Next:
  cat {files["analytics_summary"]}
  make ui        # Dagster UI on http://127.0.0.1:3000 with this demo's runs, schedule and sensor
  .venv/bin/crm-pipeline dev   # UI, daemon and API together; prints a local API key

The API needs a key on every /api/ route (shown once, only its hash is stored):
  .venv/bin/crm-pipeline api-keys create --name me --scopes customers:read,analytics:read
  .venv/bin/crm-pipeline serve &
  curl -H "Authorization: Bearer <key>" http://127.0.0.1:8000/api/analytics/summary
"""
