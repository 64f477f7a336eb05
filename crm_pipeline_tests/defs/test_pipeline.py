"""The whole graph, materialised for real: emulator -> Parquet -> PostgreSQL -> JSON files."""

import datetime as dt
from decimal import Decimal

import dagster as dg
import pyarrow.parquet as pq
import pytest
from graph_emulator import EmulatorData
from sqlalchemy import text

from crm_pipeline import lake
from crm_pipeline.cachefile import read_json
from crm_pipeline.defs.analytics.assets import SUMMARY_SCHEMA_VERSION, analytics_summary
from crm_pipeline.defs.cache.assets import marketing_insights_cache
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
from crm_pipeline.defs.facebook.partitions import insights_partition_key
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.demo import demo_crm_rows, seed_demo_crm

ENVELOPE = {"generated_at", "watermark", "schema_version"}


@pytest.fixture
def resources(database_url, emulator, dirs):
    return {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
        "graph_api": GraphApiResource(
            graph_url=emulator.url, ad_account_ids="act_1001,act_1002", page_size=7
        ),
    }


def _days(n: int) -> list[str]:
    today = dt.datetime.now(dt.UTC).date()
    return [(today - dt.timedelta(days=i)).isoformat() for i in reversed(range(n))]


def _materialize_all(resources, days):
    for day in days:
        for account in ("act_1001", "act_1002"):
            result = dg.materialize(
                [fb_ad_insights_raw, ad_insights_daily],
                partition_key=insights_partition_key(account, day),
                resources=resources,
            )
            assert result.success
    result = dg.materialize([marketing_insights_cache, analytics_summary], resources=resources)
    assert result.success
    return result


def test_full_graph_materializes_into_db_and_cache(clean_db, resources, dirs):
    seed_demo_crm(clean_db)
    days = _days(3)
    _materialize_all(resources, days)

    data = EmulatorData()
    expected = [
        r
        for acct in data.account_ids
        for d in days
        for r in data.insights(acct, dt.date.fromisoformat(d), dt.date.fromisoformat(d))
    ]
    path = lake.raw_path(dirs["data"], "fb_ad_insights", f"account=act_1001/date={days[0]}")
    partition_dir = dirs["data"] / "raw" / "fb_ad_insights" / "account=act_1001"
    assert path == partition_dir / f"date={days[0]}" / "part-0.parquet"
    raw = pq.read_table(path)
    assert raw.num_rows == len(expected) // len(days) // 2
    assert raw.schema.field("spend").type == "string"  # as Meta sends it, never a float

    with clean_db.connect() as conn:
        db_rows = conn.execute(text("SELECT count(*), sum(spend) FROM ad_insights_daily")).one()
    assert db_rows[0] == len(expected)
    assert db_rows[1] == sum(Decimal(r["spend"]) for r in expected)

    insights = read_json(dirs["cache"] / "marketing" / "insights.json")
    summary = read_json(dirs["cache"] / "analytics" / "summary.json")
    for doc in (insights, summary):
        assert doc.keys() >= ENVELOPE
    assert insights["schema_version"] == 1
    assert summary["schema_version"] == SUMMARY_SCHEMA_VERSION
    assert Decimal(str(insights["totals"]["spend"])) == db_rows[1]
    assert [d["date"] for d in insights["by_day"]] == days

    people, orders = demo_crm_rows()
    paid = [o for o in orders if o["status"] == "paid"]
    assert summary["revenue"]["orders"] == len(paid)
    assert Decimal(str(summary["revenue"]["total"])) == sum(o["amount"] for o in paid)
    tiers = {t["tier"]: t["customers"] for t in summary["customers"]["by_tier"]}
    assert tiers == {tier: sum(p["tier"] == tier for p in people) for tier in tiers}
    assert sum(tiers.values()) == len(people)
    assert Decimal(str(summary["ad_spend"]["total"])) == db_rows[1]


def test_rerunning_the_graph_is_idempotent(clean_db, resources, dirs):
    seed_demo_crm(clean_db)
    days = _days(2)
    _materialize_all(resources, days)
    with clean_db.connect() as conn:
        before = conn.execute(text("SELECT * FROM ad_insights_daily ORDER BY ad_id, date")).all()
        changes = conn.execute(text("SELECT count(*) FROM change_log")).scalar_one()
    summary = read_json(dirs["cache"] / "analytics" / "summary.json")

    seed_demo_crm(clean_db)
    result = _materialize_all(resources, days)
    with clean_db.connect() as conn:
        assert (
            conn.execute(text("SELECT * FROM ad_insights_daily ORDER BY ad_id, date")).all()
            == before
        )
        assert conn.execute(text("SELECT count(*) FROM change_log")).scalar_one() == changes
    again = read_json(dirs["cache"] / "analytics" / "summary.json")
    assert {k: v for k, v in again.items() if k != "generated_at"} == {
        k: v for k, v in summary.items() if k != "generated_at"
    }
    assert result.success
