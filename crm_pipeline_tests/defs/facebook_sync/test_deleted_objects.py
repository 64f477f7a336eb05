"""Deleted and archived ad objects keep coming; an ad Meta refuses never sinks the sync.

Real Dagster runs, the real SDK over HTTP against the emulator, real PostgreSQL.
"""

import datetime as dt
from decimal import Decimal

import dagster as dg
import orjson
from graph_emulator import EmulatorData, GraphEmulator
from sqlalchemy import text

from crm_pipeline import lake
from crm_pipeline.cachefile import read_json
from crm_pipeline.defs.cache.assets import marketing_insights_cache
from crm_pipeline.defs.crm.assets import ad_objects
from crm_pipeline.defs.facebook.assets import fb_ad_objects_raw
from crm_pipeline.facebook.fields import EFFECTIVE_STATUSES
from crm_pipeline_tests.defs.facebook_sync.sync_helpers import (
    ACCOUNTS,
    DAYS,
    range_run,
    resources_for,
    sync,
)

ACCOUNT = ACCOUNTS[0]
LATER = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)


def _spend_of(campaign_id: str) -> Decimal:
    """The campaign's spend over DAYS, from fresh emulator data (nothing deleted)."""
    since, until = dt.date.fromisoformat(DAYS[0]), dt.date.fromisoformat(DAYS[-1])
    rows = EmulatorData().insights(ACCOUNT, since, until)
    return sum((Decimal(r["spend"]) for r in rows if r["campaign_id"] == campaign_id), Decimal(0))


def _campaign_in_cache(resources, dirs, campaign_id: str) -> dict:
    lookback = (dt.datetime.now(dt.UTC).date() - dt.date.fromisoformat(DAYS[0])).days + 1
    result = dg.materialize(
        [marketing_insights_cache],
        resources=resources,
        run_config={"ops": {"marketing_insights_cache": {"config": {"lookback_days": lookback}}}},
    )
    assert result.success
    payload = read_json(dirs["cache"] / "marketing" / "insights.json")
    [row] = [r for r in payload["by_campaign"] if r["campaign_id"] == campaign_id]
    return row


def _status(engine, table: str, object_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT status FROM {table} WHERE id = :i"), {"i": object_id}
        ).scalar_one_or_none()


def test_a_deleted_campaign_keeps_its_name_against_its_spend(clean_db, database_url, dirs):
    data = EmulatorData()
    campaign = data.campaigns(ACCOUNT)[0]
    with GraphEmulator(data) as server:
        resources = resources_for(database_url, server.url, dirs)
        sync(database_url, server, dirs)
        data.set_status(campaign["id"], "DELETED", LATER)
        sync(database_url, server, dirs)  # the next sync reads the deleted campaign
    assert _status(clean_db, "campaigns", campaign["id"]) == "DELETED"
    landed = lake.read_newest_sync(dirs["data"], "campaigns").to_pylist()
    assert {r["id"]: r["effective_status"] for r in landed}[campaign["id"]] == "DELETED"
    row = _campaign_in_cache(resources, dirs, campaign["id"])
    assert row["campaign_name"] == campaign["name"]
    assert Decimal(str(row["spend"])) == _spend_of(campaign["id"]) > 0


def test_objects_deleted_or_archived_before_the_first_sync_are_read(clean_db, database_url, dirs):
    data = EmulatorData()
    campaign = data.campaigns(ACCOUNT)[1]
    adset = data.adsets(ACCOUNT)[0]
    ad = next(a for a in data.ads(ACCOUNT) if a["campaign_id"] != campaign["id"])
    with GraphEmulator(data) as server:
        resources = resources_for(database_url, server.url, dirs)
        # Spend is recorded while the campaign runs; its objects are first read after it is gone.
        assert range_run(resources, ACCOUNT, DAYS[0], DAYS[-1]).success
        data.set_status(campaign["id"], "DELETED", LATER)
        data.set_status(adset["id"], "ARCHIVED", LATER)
        data.set_status(ad["id"], "DELETED", LATER)
        assert dg.materialize([fb_ad_objects_raw, ad_objects], resources=resources).success
        filters = [
            orjson.loads(r.params["filtering"])
            for r in server.requests
            if r.path.endswith(("/campaigns", "/adsets", "/ads"))
        ]
    assert _status(clean_db, "campaigns", campaign["id"]) == "DELETED"
    assert _status(clean_db, "adsets", adset["id"]) == "ARCHIVED"
    assert _status(clean_db, "ads", ad["id"]) == "DELETED"
    every = {"field": "effective_status", "operator": "IN", "value": list(EFFECTIVE_STATUSES)}
    assert filters and all(every in f for f in filters)
    row = _campaign_in_cache(resources, dirs, campaign["id"])
    assert row["campaign_name"] == campaign["name"]
    assert Decimal(str(row["spend"])) == _spend_of(campaign["id"]) > 0


def test_an_ad_meta_refuses_is_quarantined_and_counted(clean_db, database_url, dirs):
    data = EmulatorData()
    ads = data.ads(ACCOUNT)
    broken = ads[3]["id"]
    data.break_object(broken)
    with GraphEmulator(data) as server:
        resources = resources_for(database_url, server.url, dirs)
        result = dg.materialize([fb_ad_objects_raw, ad_objects], resources=resources)
    assert result.success  # the stream lands its good objects; the check says what is missing
    [event] = [
        m
        for m in result.asset_materializations_for_node("fb_ad_objects_raw")
        if m.asset_key == dg.AssetKey("fb_ads_raw")
    ]
    assert event.metadata["refused"].value == 1
    assert event.metadata["quarantined"].value == 1
    [check] = [
        c
        for c in result.get_asset_check_evaluations()
        if c.asset_key == dg.AssetKey("fb_ads_raw") and c.check_name == "no_quarantined_rows"
    ]
    assert not check.passed
    assert check.metadata["quarantined"].value == 1
    assert any("2446289" in reason for reason in check.metadata["reasons"].value)
    with clean_db.connect() as conn:
        loaded = set(conn.execute(text("SELECT id FROM ads")).scalars())
    every_ad = {a["id"] for acct in ACCOUNTS for a in data.ads(acct)}
    assert loaded == every_ad - {broken}
