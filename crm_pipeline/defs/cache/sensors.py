"""The change-log sensor: DB writes from any client become targeted cache rebuilds."""


import json
import os

import dagster as dg

from crm_pipeline.db.changelog import read_change_window
from crm_pipeline.defs.analytics.assets import analytics_summary
from crm_pipeline.defs.cache.assets import marketing_insights_cache
from crm_pipeline.defs.resources import PostgresResource

# Which cache assets a change to each table makes stale.
ASSETS_BY_ENTITY: dict[str, tuple[dg.AssetKey, ...]] = {
    "ad_insights_daily": (marketing_insights_cache.key, analytics_summary.key),
    "campaigns": (marketing_insights_cache.key,),
    "customers": (analytics_summary.key,),
    "orders": (analytics_summary.key,),
}

SENSOR_INTERVAL_SECONDS = int(os.environ.get("CRM_CHANGE_SENSOR_INTERVAL", "5"))


@dg.sensor(
    asset_selection=[marketing_insights_cache, analytics_summary],
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reads change_log past an xid8 watermark that is safe under out-of-order commits and "
        "requests a run of exactly the cache assets the changed tables feed."
    ),
)
def change_log_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    """Turn the change rows committed since the last tick into one targeted run."""
    since = json.loads(context.cursor)["upto"] if context.cursor else None
    with postgres.engine().connect() as conn:
        window = read_change_window(conn, since)
    cursor = json.dumps({"upto": window.upto})
    stale = sorted(
        {key for entity in window.entity_names for key in ASSETS_BY_ENTITY.get(entity, ())},
        key=lambda k: k.to_user_string(),
    )
    if not stale:
        return dg.SensorResult(skip_reason="no relevant changes", cursor=cursor)
    changed = {e.entity: e.changes for e in window.entities}
    context.log.info(f"changes in {window.since}..{window.upto}: {changed}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"change_log:{window.since}:{window.upto}",
                asset_selection=stale,
                tags={"crm/change_window": f"{window.since}..{window.upto}"},
            )
        ],
        cursor=cursor,
    )
