"""Source-of-truth tables in PostgreSQL, as assets.

`ad_insights_daily` is loaded from the raw Parquet by the bulk upsert. `customers` and `orders`
are written by the API, other apps and people with psql, not by Dagster: they are declared as
external assets so that lineage shows what the caches and the summary are built from.
"""

import dagster as dg
import pyarrow.compute as pc

from crm_pipeline import lake
from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs.facebook.assets import INSIGHTS_STREAM, fb_ad_insights_raw
from crm_pipeline.defs.facebook.partitions import insights_daily_partitions
from crm_pipeline.defs.resources import PostgresResource, StorageResource

# Raw Graph fields -> ad_insights_daily columns.
INSIGHTS_COLUMNS = {
    "account_id": "account_id",
    "campaign_id": "campaign_id",
    "adset_id": "adset_id",
    "ad_id": "ad_id",
    "date_start": "date",
    "impressions": "impressions",
    "clicks": "clicks",
    "spend": "spend",
    "reach": "reach",
}

customers = dg.AssetSpec(
    "customers",
    group_name="crm",
    kinds={"postgres"},
    owners=["team:crm"],
    description="CRM customers (PostgreSQL table `customers`), written by the API and other apps.",
)
orders = dg.AssetSpec(
    "orders",
    group_name="crm",
    kinds={"postgres"},
    owners=["team:crm"],
    deps=[customers],
    description="Customer orders (PostgreSQL table `orders`), written by the shop and the API.",
)


@dg.asset(
    partitions_def=insights_daily_partitions,
    deps=[fb_ad_insights_raw],
    group_name="crm",
    kinds={"postgres"},
    owners=["team:data-engineering"],
    description=(
        "One row per ad and day (PostgreSQL table `ad_insights_daily`), upserted from the raw "
        "Parquet partition on (ad_id, date) through COPY + INSERT … ON CONFLICT: re-running a "
        "day is idempotent and rewrites only rows whose numbers changed."
    ),
)
def ad_insights_daily(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Upsert one day of raw insights into PostgreSQL."""
    raw = lake.read_parquet(
        lake.raw_path(storage.data_path(), INSIGHTS_STREAM, context.partition_key)
    )
    # Rows for another day would land in the wrong partition: keep only this one's.
    raw = raw.filter(pc.equal(raw["date_start"], context.partition_key))
    rows = raw.select(list(INSIGHTS_COLUMNS)).rename_columns(list(INSIGHTS_COLUMNS.values()))
    with postgres.engine().begin() as conn:
        result = bulk_upsert(conn, schema.ad_insights_daily, rows)
    context.log.info(
        f"ad_insights_daily {context.partition_key}: {result.inserted} inserted, "
        f"{result.updated} updated, {result.unchanged} unchanged"
    )
    return dg.MaterializeResult(
        metadata={
            "rows": result.staged,
            "inserted": result.inserted,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "table": "ad_insights_daily",
            "database": postgres.display_url(),
        }
    )
