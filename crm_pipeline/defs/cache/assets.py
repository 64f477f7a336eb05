"""JSON cache assets: files the UI reads instantly instead of querying the database."""


import datetime as dt
import time

import dagster as dg
from sqlalchemy import text

from crm_pipeline.cachefile import envelope, write_json_atomic
from crm_pipeline.db.changelog import reflected_watermark
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline.defs.cache import customers
from crm_pipeline.defs.cache.publish import publish_from_snapshot
from crm_pipeline.defs.crm.assets import ad_insights_daily
from crm_pipeline.defs.resources import PostgresResource, StorageResource

MARKETING_INSIGHTS_FILE = "marketing/insights.json"
MARKETING_SCHEMA_VERSION = 1


class MarketingCacheConfig(dg.Config):
    """How many days (ending today, UTC) `marketing/insights.json` covers."""

    lookback_days: int = 30


_TOTALS = """
SELECT coalesce(sum(impressions), 0) AS impressions, coalesce(sum(clicks), 0) AS clicks,
       coalesce(sum(spend), 0) AS spend, count(DISTINCT ad_id) AS ads,
       min(date) AS first_date, max(date) AS last_date
FROM ad_insights_daily WHERE date BETWEEN :since AND :until
"""
_BY_DAY = """
SELECT date, sum(impressions) AS impressions, sum(clicks) AS clicks, sum(spend) AS spend
FROM ad_insights_daily WHERE date BETWEEN :since AND :until
GROUP BY date ORDER BY date
"""
_BY_CAMPAIGN = """
SELECT i.account_id, i.campaign_id, c.name AS campaign_name,
       sum(i.impressions) AS impressions, sum(i.clicks) AS clicks, sum(i.spend) AS spend
FROM ad_insights_daily i LEFT JOIN campaigns c ON c.id = i.campaign_id
WHERE i.date BETWEEN :since AND :until
GROUP BY i.account_id, i.campaign_id, c.name
ORDER BY sum(i.spend) DESC, i.campaign_id
"""


def _ratios(impressions: int, clicks: int, spend) -> dict:
    # From the exact totals (spend is a Decimal), rounded so reruns give identical files.
    return {
        "ctr": round(clicks / impressions, 6) if impressions else None,
        "cpc": round(spend / clicks, 4) if clicks else None,
        "cpm": round(spend * 1000 / impressions, 4) if impressions else None,
    }


def build_marketing_insights(conn, since: dt.date, until: dt.date) -> dict:
    """The `marketing/insights.json` payload for `[since, until]`, read from `conn`."""
    params = {"since": since, "until": until}
    totals = conn.execute(text(_TOTALS), params).one()._asdict()
    by_day = [
        {**r._asdict(), "date": r.date.isoformat()}
        for r in conn.execute(text(_BY_DAY), params)
    ]
    by_campaign = [r._asdict() for r in conn.execute(text(_BY_CAMPAIGN), params)]
    return {
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "totals": {
            "impressions": totals["impressions"],
            "clicks": totals["clicks"],
            "spend": totals["spend"],
            "ads": totals["ads"],
            **_ratios(totals["impressions"], totals["clicks"], totals["spend"]),
        },
        "by_day": by_day,
        "by_campaign": by_campaign,
    }


@dg.asset(
    deps=[ad_insights_daily],
    group_name="cache",
    kinds={"json"},
    owners=["team:data-engineering"],
    description=(
        "cache/marketing/insights.json: spend, impressions, clicks and ratios by day and by "
        "campaign over the last N days, for the UI's marketing page."
    ),
)
def marketing_insights_cache(
    context: dg.AssetExecutionContext,
    config: MarketingCacheConfig,
    postgres: PostgresResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    """Rebuild the marketing insights cache file from one consistent DB snapshot."""
    until = dt.datetime.now(dt.UTC).date()
    since = until - dt.timedelta(days=config.lookback_days - 1)
    published = publish_from_snapshot(
        postgres,
        storage,
        MARKETING_INSIGHTS_FILE,
        MARKETING_SCHEMA_VERSION,
        lambda conn: build_marketing_insights(conn, since, until),
    )
    payload = published.payload
    return dg.MaterializeResult(
        metadata=published.metadata(
            rows=len(payload["by_day"]),
            campaigns=len(payload["by_campaign"]),
            spend=float(payload["totals"]["spend"]),
        )
    )


CUSTOMER_SCHEMA_VERSION = 2  # 2: the customer row names `updated_by`


class CustomerProfilesConfig(dg.Config):
    """Which customer files to rebuild: the listed ids, or every customer when unset."""

    customer_ids: list[int] | None = None


@dg.asset(
    deps=["customers", "orders", "leads", "conversations", "messages"],
    group_name="cache",
    kinds={"json"},
    owners=["team:crm"],
    description=(
        "cache/customers/<id>.json: one customer 360 file per customer (customer, leads, "
        "conversations with recent messages, orders, attributed campaign/ad). The change-log "
        "sensor passes the ids that changed, so a run rewrites only those files; without ids "
        "it rebuilds all and removes files of deleted customers."
    ),
)
def customer_profiles_cache(
    context: dg.AssetExecutionContext,
    config: CustomerProfilesConfig,
    postgres: PostgresResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    """Rewrite the requested customer 360 files from one consistent snapshot."""
    started = time.perf_counter()
    folder = storage.cache_path() / customers.PROFILE_DIR
    written = deleted = 0
    seen: set[int] = set()
    with read_snapshot(postgres.engine()) as conn:
        watermark = reflected_watermark(conn)
        batches = (
            [sorted(set(config.customer_ids))]
            if config.customer_ids is not None
            else customers.all_customer_ids(conn)
        )
        for ids in batches:
            profiles = customers.build_profiles(conn, ids)
            for cid in ids:
                path = folder / f"{cid}.json"
                if cid in profiles:
                    doc = envelope(
                        profiles[cid], watermark=watermark, schema_version=CUSTOMER_SCHEMA_VERSION
                    )
                    write_json_atomic(path, doc)
                    written += 1
                elif path.exists():
                    path.unlink()  # the customer was deleted
                    deleted += 1
            seen.update(profiles)
    if config.customer_ids is None and folder.exists():
        for path in folder.glob("*.json"):
            if path.stem.isdigit() and int(path.stem) not in seen:
                path.unlink()
                deleted += 1
    mode = "full" if config.customer_ids is None else "targeted"
    context.log.info(f"{mode} rebuild: {written} customer files written, {deleted} removed")
    return dg.MaterializeResult(
        metadata={
            "mode": mode,
            "files": written,
            "deleted": deleted,
            "path": dg.MetadataValue.path(str(folder)),
            "watermark": watermark,
            "seconds": round(time.perf_counter() - started, 3),
        }
    )


@dg.asset(
    deps=["customers", "orders", "leads"],
    group_name="cache",
    kinds={"json"},
    owners=["team:crm"],
    description="cache/customers/index.json: every customer with tier, orders, revenue, leads.",
)
def customer_index_cache(
    postgres: PostgresResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Rebuild the customer list file."""
    from crm_pipeline.defs.analytics.kpis import REVENUE_STATUSES

    published = publish_from_snapshot(
        postgres,
        storage,
        customers.INDEX_FILE,
        CUSTOMER_SCHEMA_VERSION,
        lambda conn: customers.build_index(conn, REVENUE_STATUSES),
    )
    return dg.MaterializeResult(metadata=published.metadata(rows=published.payload["count"]))
