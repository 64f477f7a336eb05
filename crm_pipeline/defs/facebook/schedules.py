"""The hourly bulk sync: today's and yesterday's insights partitions, every hour."""

import datetime as dt

import dagster as dg

from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.facebook.assets import fb_ad_insights_raw
from crm_pipeline.defs.facebook.partitions import insights_daily_partitions

facebook_sync_job = dg.define_asset_job(
    "facebook_sync_job",
    selection=[fb_ad_insights_raw, ad_insights_daily],
    partitions_def=insights_daily_partitions,
    description="Fetch one day of Facebook insights and upsert it into PostgreSQL.",
    # The instance's run queue (dagster.yaml) limits how many runs call Meta at once.
    tags={"crm/graph_api": "true"},
)


@dg.schedule(
    job=facebook_sync_job,
    cron_schedule="0 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Hourly bulk sync. Refreshes yesterday (late attribution) and today. The caches follow "
        "through change_log_sensor when the sync actually changed rows."
    ),
)
def hourly_facebook_sync(context: dg.ScheduleEvaluationContext):
    """One run per partition: yesterday and today, keyed by the scheduled hour."""
    now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    hour = now.strftime("%Y-%m-%dT%H")
    for day in (now.date() - dt.timedelta(days=1), now.date()):
        yield dg.RunRequest(run_key=f"{day.isoformat()}@{hour}", partition_key=day.isoformat())
