"""JSON cache assets: files the UI reads instantly instead of querying the database.

What each file is, reads and is built by lives in the cache registry (`crm_pipeline.cache`);
these assets run those builders for Dagster, with `deps` taken from the registry.
"""

import time

import dagster as dg

from crm_pipeline.cache import insights, registry
from crm_pipeline.cache.charts import insights_charts
from crm_pipeline.cache.rebuild import (
    rebuild_all_customers,
    rebuild_customers,
    rebuild_file,
    rebuild_index,
)
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline.defs import groups
from crm_pipeline.defs.cache.publish import chart_metadata, rebuilt_metadata
from crm_pipeline.defs.cache.worker_report import MAX_LISTED_SEGMENTS
from crm_pipeline.defs.resources import PostgresResource, StorageResource


def cache_asset(file: registry.CacheFile, **kwargs):
    """`dg.asset` for a registry file: its name, description and lineage come from there."""
    return dg.asset(
        name=file.asset,
        deps=list(file.reads),
        kinds={"json"},
        description=file.description,
        **kwargs,
    )


class MarketingCacheConfig(dg.Config):
    """How many days (ending today, UTC) `marketing/insights.json` covers."""

    lookback_days: int = insights.LOOKBACK_DAYS


@cache_asset(registry.MARKETING_INSIGHTS, group_name=groups.CACHE, owners=["team:data-engineering"])
def marketing_insights_cache(
    context: dg.AssetExecutionContext,
    config: MarketingCacheConfig,
    postgres: PostgresResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    """Rebuild the marketing insights cache file from one consistent DB snapshot."""
    rebuilt = rebuild_file(
        postgres.engine(),
        storage.cache_store(),
        registry.MARKETING_INSIGHTS,
        lambda conn: insights.build_recent(conn, config.lookback_days),
    )
    payload = rebuilt.payload
    return dg.MaterializeResult(
        metadata=rebuilt_metadata(
            rebuilt,
            rows=len(payload["by_day"]),
            campaigns=len(payload["by_campaign"]),
            spend=float(payload["totals"]["spend"]),
            # Drawn from the document just written, not a second query.
            **chart_metadata(insights_charts(payload)),
        )
    )


class CustomerProfilesConfig(dg.Config):
    """Which customer files to rebuild: the listed ids, or every customer when unset."""

    customer_ids: list[int] | None = None


@cache_asset(registry.CUSTOMER_PROFILES, group_name=groups.CACHE, owners=["team:crm"])
def customer_profiles_cache(
    context: dg.AssetExecutionContext,
    config: CustomerProfilesConfig,
    postgres: PostgresResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    """Rewrite the requested customer 360 files from one consistent snapshot (the change-log
    sensor passes the ids that changed; without ids, every file, and files of deleted customers
    are removed)."""
    started = time.perf_counter()
    store = storage.cache_store()
    folder = store.where(registry.CUSTOMER_PROFILES.path)
    with read_snapshot(postgres.engine()) as conn:
        if config.customer_ids is None:
            result = rebuild_all_customers(conn, store)
        else:
            result = rebuild_customers(conn, store, sorted(set(config.customer_ids)))
    watermark = result.watermark
    written, deleted, superseded = (
        len(result.written),
        len(result.removed),
        len(result.superseded),
    )
    mode = "full" if config.customer_ids is None else "targeted"
    context.log.info(f"{mode} rebuild: {written} customer files written, {deleted} removed")
    return dg.MaterializeResult(
        metadata={
            "mode": mode,
            "files": written,
            "deleted": deleted,
            "superseded": superseded,  # a newer file was already there (the worker's)
            "path": dg.MetadataValue.path(str(folder)),
            "watermark": watermark,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


class CustomerIndexConfig(dg.Config):
    """Whose index segments to rebuild: the segments of the listed customer ids, or every
    segment when unset."""

    customer_ids: list[int] | None = None


@cache_asset(registry.CUSTOMER_INDEX, group_name=groups.CACHE, owners=["team:crm"])
def customer_index_cache(
    context: dg.AssetExecutionContext,
    config: CustomerIndexConfig,
    postgres: PostgresResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    """Rewrite the customer index segments of the requested customers (the change-log sensor
    passes the ids that changed; without ids, every segment, and segments left without
    customers are removed), then merge them into the manifest, from one snapshot."""
    started = time.perf_counter()
    store = storage.cache_store()
    ids = None if config.customer_ids is None else sorted(set(config.customer_ids))
    with read_snapshot(postgres.engine()) as conn:
        result = rebuild_index(conn, store, ids)
    context.log.info(
        f"{result.mode} rebuild: {len(result.written)} index segments written, "
        f"{len(result.removed)} removed"
    )
    manifest = result.manifest
    return dg.MaterializeResult(
        metadata={
            "mode": result.mode,
            "files": len(result.written),
            "segments": dg.MetadataValue.json(result.written[:MAX_LISTED_SEGMENTS]),
            "deleted": len(result.removed),
            "superseded": len(result.superseded),  # a newer segment was already there
            "customers": result.customers,  # in the segments written
            "bytes": result.bytes,
            "path": dg.MetadataValue.path(str(store.where(registry.CUSTOMER_INDEX.path))),
            "manifest_watermark": "" if manifest is None else manifest.watermark,
            "watermark": result.watermark,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
