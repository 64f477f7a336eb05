"""The analytics summary: KPIs pre-computed for analysts and the UI."""

import datetime as dt

import dagster as dg

from crm_pipeline.defs.analytics.kpis import compute_summary
from crm_pipeline.defs.cache.assets import marketing_insights_cache
from crm_pipeline.defs.cache.publish import publish_from_snapshot
from crm_pipeline.defs.crm.assets import ad_insights_daily, customers, orders
from crm_pipeline.defs.resources import PostgresResource, StorageResource

SUMMARY_FILE = "analytics/summary.json"
SUMMARY_SCHEMA_VERSION = 1


@dg.asset(
    # After the marketing cache, so one run leaves both files built from the same data.
    deps=[ad_insights_daily, customers, orders, marketing_insights_cache],
    group_name="analytics",
    kinds={"json"},
    owners=["team:analytics"],
    description=(
        "cache/analytics/summary.json: revenue, customers by tier and ad spend, computed in "
        "SQL from one consistent snapshot of the source-of-truth database."
    ),
)
def analytics_summary(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Recompute the KPIs and write summary.json atomically."""
    today = dt.datetime.now(dt.UTC).date()
    published = publish_from_snapshot(
        postgres,
        storage,
        SUMMARY_FILE,
        SUMMARY_SCHEMA_VERSION,
        lambda conn: compute_summary(conn, today),
    )
    summary = published.payload
    return dg.MaterializeResult(
        metadata=published.metadata(
            customers=summary["customers"]["total"],
            orders=summary["revenue"]["orders"],
            ad_spend_total=float(summary["ad_spend"]["total"]),
        )
    )
