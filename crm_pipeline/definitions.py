"""`defs`: the whole code location, merged from the domain folders under `defs/`.

Loading this module starts nothing (no database, no emulator, no network): resources resolve
their settings when a run or a sensor tick uses them.
"""

from __future__ import annotations

import dagster as dg

from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import (
    customer_index_cache,
    customer_profiles_cache,
    marketing_insights_cache,
)
from crm_pipeline.defs.cache.sensors import change_log_sensor
from crm_pipeline.defs.crm.assets import (
    ad_insights_daily,
    ad_objects,
    conversations_and_messages,
    customers,
    leads,
    orders,
)
from crm_pipeline.defs.crm.inbox import webhook_inbox_sensor, webhook_leads
from crm_pipeline.defs.crm.snapshot import local_db_snapshot
from crm_pipeline.defs.facebook.assets import (
    fb_ad_insights_raw,
    fb_ad_objects_raw,
    fb_conversations_raw,
    fb_leads_raw,
)
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.facebook.schedules import (
    daily_attribution_resync,
    facebook_insights_job,
    facebook_streams_job,
    hourly_facebook_sync,
)
from crm_pipeline.defs.resources import PostgresResource, StorageResource


def default_resources() -> dict:
    """Resources built from the environment; tests and the demo pass their own overrides."""
    return {
        "postgres": PostgresResource(),
        "storage": StorageResource(),
        "graph_api": GraphApiResource(),
    }


facebook = dg.Definitions(
    assets=[fb_ad_insights_raw, fb_ad_objects_raw, fb_leads_raw, fb_conversations_raw],
    jobs=[facebook_insights_job, facebook_streams_job],
    schedules=[hourly_facebook_sync, daily_attribution_resync],
)
crm = dg.Definitions(
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
    sensors=[webhook_inbox_sensor],
)
cache = dg.Definitions(
    assets=[marketing_insights_cache, customer_index_cache, customer_profiles_cache],
    sensors=[change_log_sensor],
)
analytics = dg.Definitions(assets=[analytics_summary])

defs = dg.Definitions.merge(
    facebook, crm, cache, analytics, dg.Definitions(resources=default_resources())
)
