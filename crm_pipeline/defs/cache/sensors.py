"""The change-log sensor: DB writes from any client become targeted cache rebuilds."""

import json
import os

import dagster as dg

from crm_pipeline.config import load_settings
from crm_pipeline.db.changelog import changed_customers, read_change_window
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import (
    customer_index_cache,
    customer_profiles_cache,
    marketing_insights_cache,
)
from crm_pipeline.defs.resources import PostgresResource

_MARKETING, _SUMMARY = marketing_insights_cache.key, analytics_summary.key
_INDEX, _PROFILES = customer_index_cache.key, customer_profiles_cache.key

# Which cache assets a change to each table makes stale.
ASSETS_BY_ENTITY: dict[str, tuple[dg.AssetKey, ...]] = {
    "ad_insights_daily": (_MARKETING, _SUMMARY),
    "campaigns": (_MARKETING, _SUMMARY),
    "customers": (_SUMMARY, _INDEX, _PROFILES),
    "orders": (_SUMMARY, _INDEX, _PROFILES),
    "leads": (_SUMMARY, _INDEX, _PROFILES),
    "conversations": (_PROFILES,),
    "messages": (_PROFILES,),
}

# Dagster needs the interval when the code location loads: it comes from the settings model.
SENSOR_INTERVAL_SECONDS = load_settings().sensors.change_interval_seconds
# Past this many changed customers in one tick, one full rebuild is cheaper than a long id list.
MAX_TARGETED_CUSTOMERS = load_settings().sensors.max_targeted_customers


@dg.sensor(
    asset_selection=[
        marketing_insights_cache,
        analytics_summary,
        customer_index_cache,
        customer_profiles_cache,
    ],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reads change_log past an xid8 watermark that is safe under out-of-order commits and "
        "requests one run per tick of exactly the cache assets the changed tables feed, with "
        "the changed customers' ids so only their 360 files are rewritten."
    ),
)
def change_log_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    """Turn the change rows committed since the last tick into one targeted run."""
    since = json.loads(context.cursor)["upto"] if context.cursor else None
    with postgres.engine().connect() as conn:
        window = read_change_window(conn, since)
        stale = {key for entity in window.entity_names for key in ASSETS_BY_ENTITY.get(entity, ())}
        run_config: dict = {}
        if _PROFILES in stale:
            ids, complete = changed_customers(conn, since, window.upto, MAX_TARGETED_CUSTOMERS)
            if complete and not ids:
                stale.discard(_PROFILES)  # e.g. a lead not linked to any customer
            else:
                target = ids if complete else None  # None: rebuild every file
                run_config = {"ops": {"customer_profiles_cache": {"config": {"customer_ids": target}}}}
    cursor = json.dumps({"upto": window.upto})
    if not stale:
        return dg.SensorResult(skip_reason="no relevant changes", cursor=cursor)
    changed = {e.entity: e.changes for e in window.entities}
    context.log.info(f"changes in {window.since}..{window.upto}: {changed}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"change_log:{window.since}:{window.upto}",
                asset_selection=sorted(stale, key=lambda k: k.to_user_string()),
                run_config=run_config,
                tags={"crm/change_window": f"{window.since}..{window.upto}"},
            )
        ],
        cursor=cursor,
    )
