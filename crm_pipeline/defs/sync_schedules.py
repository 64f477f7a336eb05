"""The Facebook sync's jobs and schedules: the hourly bulk sync and the daily attribution re-sync.

They run Facebook assets and the CRM tables loaded from them together, so they live above both
domain folders (`defs/facebook`, `defs/crm`), which then never import each other both ways.
"""

import datetime as dt

import dagster as dg

from crm_pipeline.config import load_settings
from crm_pipeline.defs.crm.assets import (
    ad_insights_daily,
    ad_objects,
    conversations_and_messages,
    leads,
)
from crm_pipeline.defs.facebook.assets import (
    fb_ad_insights_raw,
    fb_ad_objects_raw,
    fb_conversations_raw,
    fb_leads_raw,
)
from crm_pipeline.defs.facebook.custom_insights import CUSTOM_INSIGHT_ASSETS
from crm_pipeline.defs.facebook.partitions import (
    account_blocks,
    accounts_partition_range,
    partition_range_tags,
    partitioned_account_ids,
)

# Meta revises insights for days after they happened (attribution windows up to 28 days).
ATTRIBUTION_LOOKBACK_DAYS = load_settings().graph.attribution_lookback_days
# Marks the runs that call Meta (filter on it in the UI); the graph_api pool limits their steps.
GRAPH_TAGS = {"crm/graph_api": "true"}

# The built-in insights and every custom insights entry (CRM_CUSTOM_INSIGHTS), all partitioned
# alike: the hourly sync, the attribution re-sync and `crm-pipeline sync` run them together.
INSIGHT_ASSETS = [fb_ad_insights_raw, ad_insights_daily, *CUSTOM_INSIGHT_ASSETS]
facebook_insights_job = dg.define_asset_job(
    "facebook_insights_job",
    selection=INSIGHT_ASSETS,  # partitioned like them (inferred)
    tags=GRAPH_TAGS,
    description=(
        "Fetch Facebook insights of account-days and upsert them into PostgreSQL; a run over a "
        "partition range reads each account's days with one query."
    ),
)
STREAM_ASSETS = [
    fb_ad_objects_raw,
    ad_objects,
    fb_leads_raw,
    leads,
    fb_conversations_raw,
    conversations_and_messages,
]
facebook_streams_job = dg.define_asset_job(
    "facebook_streams_job",
    selection=STREAM_ASSETS,
    tags=GRAPH_TAGS,
    description="Incremental sync of campaigns/adsets/ads, Lead Ads leads and conversations.",
)


def _keys(assets) -> list[dg.AssetKey]:
    return [key for asset in assets for key in asset.keys]


def _insights_requests(days: list[dt.date], stamp: str, **selection):
    """One run over every account's days (a partition range: accounts × days), which reads
    the accounts at once and each account's days with one /insights query.

    The range travels as run tags (`partition_range_tags`): Dagster 1.13's `RunRequest` takes
    one partition key, and schedules cannot request a backfill.
    """
    first, last = min(days).isoformat(), max(days).isoformat()
    for block in account_blocks(partitioned_account_ids()):  # one block: every account
        key_range = accounts_partition_range(block, first, last)
        yield dg.RunRequest(
            run_key=f"{key_range.start}..{key_range.end}@{stamp}",
            tags=partition_range_tags(key_range),
            **selection,
        )


@dg.schedule(
    cron_schedule="0 * * * *",
    target=dg.AssetSelection.assets(*STREAM_ASSETS, *INSIGHT_ASSETS),
    tags=GRAPH_TAGS,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Hourly bulk sync: the incremental streams, and insights of yesterday and today for "
        "every account. The caches follow through change_log_sensor when rows actually changed."
    ),
)
def hourly_facebook_sync(context: dg.ScheduleEvaluationContext):
    """One streams run, and one insights run over every account's yesterday and today."""
    now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y-%m-%dT%H")
    yield dg.RunRequest(run_key=f"streams@{stamp}", asset_selection=_keys(STREAM_ASSETS))
    yield from _insights_requests(
        [now.date() - dt.timedelta(days=1), now.date()],
        stamp,
        asset_selection=_keys(INSIGHT_ASSETS),
    )


@dg.schedule(
    cron_schedule="30 3 * * *",
    job=facebook_insights_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Daily attribution re-sync: insights of the days before yesterday, back "
        "CRM_ATTRIBUTION_LOOKBACK_DAYS (default 28), which Meta still revises."
    ),
)
def daily_attribution_resync(context: dg.ScheduleEvaluationContext):
    """One insights run over every account's lookback window (the hourly run has the rest)."""
    now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    days = [now.date() - dt.timedelta(days=n) for n in range(2, ATTRIBUTION_LOOKBACK_DAYS + 1)]
    yield from _insights_requests(days, now.strftime("%Y-%m-%d"))
