"""One insights partition or range through Dagster: metadata, quarantine, async report runs."""

import datetime as dt
import math

import dagster as dg
from graph_emulator import EmulatorData, Fault, FaultPlan, GraphEmulator
from sqlalchemy import text

from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
from crm_pipeline.defs.facebook.partitions import insights_partition_key
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import (
    DAYS,
    MalformedData,
    insight_windows,
    range_run,
    resources_for,
    snapshot,
)


def test_a_single_partition_runs_exactly_as_before(clean_db, database_url, dirs):
    data = EmulatorData()
    key = insights_partition_key("act_1002", DAYS[0])
    with GraphEmulator(data) as server:
        result = dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily],
            partition_key=key,
            resources=resources_for(database_url, server.url, dirs),
        )
        windows = insight_windows(server)
    assert result.success
    assert result.dagster_run.tags["dagster/partition"] == "act_1002|2026-11-18"
    day = dt.date.fromisoformat(DAYS[0])
    expected = data.insights("act_1002", day, day)
    assert windows == [("act_1002", DAYS[0], DAYS[0])] * math.ceil(len(expected) / 10)
    [raw] = result.asset_materializations_for_node("fb_ad_insights_raw")
    [db] = result.asset_materializations_for_node("ad_insights_daily")
    assert raw.partition == db.partition == key
    assert set(raw.metadata) == {
        "rows",
        "quarantined",
        "path",
        "account_total_rows",
        "api_calls",
        "graph_server",
        "graph_seconds",
        "pages",
        "retries",
        "throttle_waits",
        "waited_seconds",
        "page_size_reductions",
    }
    assert raw.metadata["rows"].value == len(expected)
    assert db.metadata["upsert_seconds"].value >= 0
    timing = ("database", "upsert_seconds")
    assert {k: v.value for k, v in db.metadata.items() if k not in timing} == {
        "rows": len(expected),
        "inserted": len(expected),
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "leads": db.metadata["leads"].value,
        "purchases": sum(int(_purchases(r)) for r in expected),
        "table": "ad_insights_daily",
    }
    assert raw.metadata["account_total_rows"].value == 1  # Meta's totals of the day


def _purchases(row: dict) -> str:
    return next((a["value"] for a in row.get("actions", []) if a["action_type"] == "purchase"), "0")


def test_malformed_rows_are_quarantined_and_the_check_fails(clean_db, database_url, dirs):
    key = insights_partition_key("act_1001", DAYS[0])
    with GraphEmulator(EmulatorData()) as server:
        good = dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily],
            partition_key=key,
            resources=resources_for(database_url, server.url, dirs),
        )
    assert good.success
    before = snapshot(clean_db)["ad_insights_daily"]
    with GraphEmulator(MalformedData()) as server:
        result = dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily],
            partition_key=key,
            resources=resources_for(database_url, server.url, dirs),
        )
    assert result.success
    checks = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "no_quarantined_rows"
    ]
    assert [c.passed for c in checks] == [False]
    meta = result.asset_materializations_for_node("fb_ad_insights_raw")[0].metadata
    assert meta["quarantined"].value == 1
    # The good row already stored for the malformed ad is kept, not deleted or corrupted.
    assert snapshot(clean_db)["ad_insights_daily"] == before


def test_async_report_runs_give_the_same_rows_even_when_jobs_fail(clean_db, database_url, dirs):
    key = insights_partition_key("act_1001", DAYS[0])
    with GraphEmulator(EmulatorData()) as server:
        assert dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily],
            partition_key=key,
            resources=resources_for(database_url, server.url, dirs),
        ).success
    synchronous = snapshot(clean_db)["ad_insights_daily"]
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE ad_insights_daily"))

    faults = FaultPlan()
    faults.add(Fault(kind="async_fail", count=3))  # retried twice, then split by campaign
    resources = resources_for(database_url, None, dirs)
    with GraphEmulator(EmulatorData(), faults=faults) as server:
        resources["graph_api"] = GraphApiResource(
            graph_url=server.url,
            ad_account_ids="act_1001",
            page_id="2001",
            insights_mode="async",
        )
        result = dg.materialize(
            [fb_ad_insights_raw, ad_insights_daily], partition_key=key, resources=resources
        )
        posts = [r for r in server.requests if r.method == "POST"]
    assert result.success
    assert len(posts) > 3, "the failing job was retried and then split"
    assert snapshot(clean_db)["ad_insights_daily"] == synchronous
    meta = result.asset_materializations_for_node("fb_ad_insights_raw")[0].metadata
    assert meta["rows"].value == len(synchronous)
    assert {"api_calls", "pages", "retries", "throttle_waits"} <= meta.keys()


def test_malformed_rows_in_a_range_are_quarantined_on_their_own_day(clean_db, database_url, dirs):
    first, last = "2026-10-01", "2026-10-03"
    with GraphEmulator(MalformedData()) as server:  # one bad row: the query's first
        result = range_run(resources_for(database_url, server.url, dirs), "act_1001", first, last)
    assert result.success
    [check] = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "no_quarantined_rows"
    ]
    assert not check.passed and check.metadata["quarantined"].value == 1
    quarantined = {
        e.partition.keys_by_dimension["date"]: e.metadata["quarantined"].value
        for e in result.asset_materializations_for_node("fb_ad_insights_raw")
    }
    assert quarantined == {first: 1, "2026-10-02": 0, last: 0}
    base = dirs["data"] / "quarantine" / "fb_ad_insights" / "account=act_1001"
    assert sorted(p.name for p in base.iterdir()) == [f"date={first}"]
    ads = len(EmulatorData().ads("act_1001"))
    with clean_db.connect() as conn:
        per_day = dict(
            conn.execute(
                text("SELECT date::text, count(*) FROM ad_insights_daily GROUP BY date")
            ).all()
        )
    assert per_day == {first: ads - 1, "2026-10-02": ads, last: ads}
    # Meta's account totals count the quarantined row: that day's ad rows do not add up.
    [totals] = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "matches_account_totals"
    ]
    assert not totals.passed and totals.metadata["days"].value == [first]


def test_async_report_runs_cover_a_range_with_the_same_rows(clean_db, database_url, dirs):
    first, last = "2026-10-01", "2026-10-04"
    with GraphEmulator(EmulatorData()) as server:
        assert range_run(
            resources_for(database_url, server.url, dirs), "act_1002", first, last
        ).success
    synchronous = snapshot(clean_db)["ad_insights_daily"]
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE ad_insights_daily"))
    resources = resources_for(database_url, None, dirs)
    with GraphEmulator(EmulatorData()) as server:
        resources["graph_api"] = GraphApiResource(
            graph_url=server.url, ad_account_ids="act_1002", insights_mode="async"
        )
        result = range_run(resources, "act_1002", first, last)
        created = [r for r in server.requests if r.method == "POST"]
    assert result.success
    assert len(created) == 1, "one report run for the whole range"
    assert snapshot(clean_db)["ad_insights_daily"] == synchronous
