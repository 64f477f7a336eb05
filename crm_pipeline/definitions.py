"""`defs`: the whole code location, merged from the domain folders under `defs/`.

Loading this module starts nothing (no database, no emulator, no network): resources resolve
their settings when a run or a sensor tick uses them.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from crm_pipeline.defs import groups
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.analytics.checks import analytics_checks
from crm_pipeline.defs.cache.assets import (
    customer_index_cache,
    customer_profiles_cache,
    marketing_insights_cache,
)
from crm_pipeline.defs.cache.checks import cache_checks
from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.crm.assets import (
    ad_insights_daily,
    ad_objects,
    conversations_and_messages,
    customers,
    leads,
    orders,
)
from crm_pipeline.defs.crm.checks import table_checks
from crm_pipeline.defs.crm.inbox import webhook_inbox_sensor, webhook_leads
from crm_pipeline.defs.crm.snapshot import local_db_snapshot
from crm_pipeline.defs.facebook.assets import (
    fb_ad_insights_raw,
    fb_ad_objects_raw,
    fb_conversations_raw,
    fb_leads_raw,
)
from crm_pipeline.defs.facebook.custom_insights import CUSTOM_INSIGHT_ASSETS
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.defs.retention import (
    daily_personal_data_retention,
    personal_data_retention,
    personal_data_retention_job,
)
from crm_pipeline.defs.sync_schedules import (
    daily_attribution_resync,
    facebook_insights_job,
    facebook_streams_job,
    hourly_facebook_sync,
)


def default_resources() -> dict:
    """Resources built from the environment; tests and the demo pass their own overrides."""
    return {
        "postgres": PostgresResource(),
        "storage": StorageResource(),
        "graph_api": GraphApiResource(),
    }


# Freshness, set here for whole groups so every asset of a kind is held to the same promise.
# The hourly schedule feeds the Facebook and CRM tables: two missed hours warn, three fail.
# Cache files follow every write through the change-log sensor; with no writes they are still
# right, but rolling windows ("last 30 days") move daily, so a file older than a day fails.
HOURLY_SYNC_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=3), warn_window=dt.timedelta(hours=2)
)
CACHE_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=25), warn_window=dt.timedelta(hours=13)
)
# The retention runs daily: one missed day warns, two fail (personal data kept past its time).
RETENTION_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=dt.timedelta(hours=49), warn_window=dt.timedelta(hours=25)
)
FRESHNESS_BY_SELECTION = (
    (
        # Not the tables other apps write (the crm group), nor leads arriving by webhook.
        dg.AssetSelection.groups(groups.FACEBOOK_RAW, groups.FACEBOOK)
        - dg.AssetSelection.assets("webhook_leads"),
        HOURLY_SYNC_FRESHNESS,
    ),
    (dg.AssetSelection.groups(groups.CACHE, groups.ANALYTICS), CACHE_FRESHNESS),
    (dg.AssetSelection.assets(personal_data_retention), RETENTION_FRESHNESS),
)


def _domains() -> list[dg.Definitions]:
    """One Definitions per domain folder, and the sync schedules that span two of them (built
    here, not at module scope: the code location must hold exactly one module-level
    Definitions)."""
    return [
        dg.Definitions(
            assets=[fb_ad_insights_raw, fb_ad_objects_raw, fb_leads_raw, fb_conversations_raw],
        ),
        # Each CRM_CUSTOM_INSIGHTS entry's raw asset and table (groups facebook_raw, facebook:
        # the freshness policy below covers them like the built-in insights).
        dg.Definitions(assets=CUSTOM_INSIGHT_ASSETS),
        dg.Definitions(
            jobs=[facebook_insights_job, facebook_streams_job],
            schedules=[hourly_facebook_sync, daily_attribution_resync],
        ),
        dg.Definitions(
            assets=[
                ad_insights_daily,
                ad_objects,
                leads,
                conversations_and_messages,
                customers,
                orders,
                local_db_snapshot,
                webhook_leads,
            ],
            asset_checks=table_checks,
            sensors=[webhook_inbox_sensor],
        ),
        dg.Definitions(
            assets=[marketing_insights_cache, customer_index_cache, customer_profiles_cache],
            asset_checks=cache_checks,
            sensors=[change_log_sensor],
        ),
        dg.Definitions(assets=[analytics_summary], asset_checks=analytics_checks),
        # Spans the raw zone and the CRM database, like the sync schedules.
        dg.Definitions(
            assets=[personal_data_retention],
            jobs=[personal_data_retention_job],
            schedules=[daily_personal_data_retention],
        ),
    ]


def build_definitions() -> dg.Definitions:
    """The domains merged, with the default resources and the global policies applied."""
    # Steps run in the run's own process. Our runs are short chains (fetch -> load, or a few
    # cache files), so the multiprocess default would only add a process start and a full import
    # per step: it tripled write -> cache latency (benchmarks/write_to_cache_latency.py).
    merged = dg.Definitions.merge(
        *_domains(),
        dg.Definitions(resources=default_resources(), executor=dg.in_process_executor),
    )
    for selection, policy in FRESHNESS_BY_SELECTION:
        merged = merged.permissive_map_resolved_asset_specs(
            func=lambda spec, policy=policy: dg.apply_freshness_policy(spec, policy),
            selection=selection,
        )
    return merged


defs = build_definitions()
