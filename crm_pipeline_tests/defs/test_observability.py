"""Every materialisation of a full sync says what it did: counts, time, API use, watermark.

The UI shows these on each asset; operators compare them run to run. A materialisation with no
row or file count, or no duration, is a blind spot, so this walks every asset of a real sync.
"""

import dagster as dg

from crm_pipeline import orchestrate
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.demo import seed_demo_crm

DAYS = ["2026-11-17", "2026-11-18"]
COUNTS = {"rows", "files", "range_rows"}
FACEBOOK = {"api_calls", "pages", "retries", "throttle_waits", "waited_seconds", "graph_seconds"}


def _latest_metadata(instance: dg.DagsterInstance) -> dict[str, dict]:
    found = {}
    for key in instance.get_asset_keys():
        event = instance.get_latest_materialization_event(key)
        if event is not None and event.asset_materialization is not None:
            found[key.to_user_string()] = {
                k: v.value for k, v in event.asset_materialization.metadata.items()
            }
    return found


def test_every_materialisation_carries_counts_durations_and_usage(
    clean_db, database_url, emulator, dirs
):
    seed_demo_crm(clean_db)
    instance = dg.DagsterInstance.ephemeral()
    resources = {
        "postgres": PostgresResource(database_url=database_url),
        "storage": StorageResource(data_dir=str(dirs["data"]), cache_dir=str(dirs["cache"])),
        "graph_api": GraphApiResource(
            graph_url=emulator.url, ad_account_ids="act_1001,act_1002", page_size=7
        ),
    }
    orchestrate.sync_facebook(
        DAYS, resources=resources, instance=instance, database_url=database_url
    )
    metadata = _latest_metadata(instance)
    expected = {
        "fb_ad_insights_raw",
        "ad_insights_daily",
        "campaigns",
        "ads",
        "leads",
        "conversations",
        "messages",
        "marketing_insights_cache",
        "customer_index_cache",
        "customer_profiles_cache",
        "analytics_summary",
    }
    assert expected <= metadata.keys()
    for asset, meta in metadata.items():
        assert COUNTS & meta.keys(), f"{asset} has no row or file count: {sorted(meta)}"
        assert any(k.endswith("seconds") for k in meta), f"{asset} has no duration: {sorted(meta)}"
        if asset.startswith("fb_"):
            assert meta.keys() >= FACEBOOK, f"{asset} lacks API usage: {sorted(meta)}"
        if asset.endswith("_cache") or asset == "analytics_summary":
            assert str(meta["watermark"]).isdigit(), asset
    # The KPI tables analysts look at in the UI, as Markdown.
    summary = metadata["analytics_summary"]
    for table in ("kpis", "customers_by_tier", "campaigns", "revenue_by_month", "freshness"):
        assert summary[table].lstrip().startswith("|"), table
