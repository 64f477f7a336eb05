"""Every cache file, said once: its path, schema version, the tables it is built from, and how
to build it from one DB snapshot.

Everything else reads this: the Dagster assets (their `deps` are `reads`, so the lineage in the
UI is what the builders read), the change-log sensor and the cache worker (which files a change
makes stale), the asset checks, and the API (the cache-first routes).

A change to one of `reads` makes a file stale. For the files targeted by customer (one file per
customer, or the customer index's segments by id range), a change that names a customer makes
only that customer's file (or segment) stale; tables read for every customer (`shared`, e.g.
the campaign names shown in the attribution block) and a TRUNCATE make them all stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from crm_pipeline.cache import customer_files, customer_index, insights, summary
from crm_pipeline.cache.kpis import REVENUE_STATUSES
from crm_pipeline.cache.summary_model import SUMMARY_SCHEMA_VERSION

# Bumped when a file's layout changes: readers rebuild a file written by another version.
CUSTOMER_SCHEMA_VERSION = 2  # 2: the customer row names `updated_by`
INDEX_SCHEMA_VERSION = 3  # 3: segments by id range plus a manifest (was one index.json)

Payload = dict[str, Any]


@dataclass(frozen=True)
class CacheFile:
    """One cache file; with `per_customer`, one file per customer; with `segmented`, segments of
    customers by id range plus a manifest (`crm_pipeline.cache.customer_index`)."""

    asset: str  # the Dagster asset that materialises it
    path: str  # relative to the cache dir; per customer or segmented: a folder
    schema_version: int
    reads: tuple[str, ...]  # the tables the builder reads: the lineage and what makes it stale
    description: str
    build: Callable[[Connection], Payload] | None = None  # a single file
    # Per-customer files: payloads of the given customers that exist (absent ids are missing).
    build_customers: Callable[[Connection, Sequence[int]], dict[int, Payload]] | None = None
    # Segmented: payloads of the given segments that hold a customer (empty ones are absent).
    build_segments: Callable[[Connection, Sequence[int]], dict[int, Payload]] | None = None
    shared: tuple[str, ...] = ()  # of `reads`, targeted: tables every customer's part reads

    @property
    def per_customer(self) -> bool:
        """One file per customer (`<path>/<id>.json`)."""
        return self.build_customers is not None

    @property
    def segmented(self) -> bool:
        """Segments of customers by id range plus a manifest."""
        return self.build_segments is not None

    @property
    def targeted(self) -> bool:
        """Does a change naming customers make only their part stale (their file, or their
        segment), so that only that part is rebuilt?"""
        return self.per_customer or self.segmented

    def file(self, customer_id: int | None = None) -> str:
        """The relative path of the file; for targeted files, the file holding `customer_id`
        (its 360 file, or its segment); for segments without an id, the manifest."""
        if self.segmented:
            if customer_id is None:
                return customer_index.MANIFEST_FILE
            return customer_index.segment_file(customer_index.segment_of(customer_id))
        if self.per_customer:
            if customer_id is None:
                raise ValueError(f"{self.asset} has one file per customer: pass customer_id")
            return f"{self.path}/{customer_id}.json"
        return self.path

    def stale_for_all(self, entity: str) -> bool:
        """Does a change to `entity` that names no single customer make every file stale?"""
        return entity in (self.shared if self.targeted else self.reads)


CUSTOMER_PROFILES = CacheFile(
    asset="customer_profiles_cache",
    path=customer_files.PROFILE_DIR,
    schema_version=CUSTOMER_SCHEMA_VERSION,
    reads=("customers", "orders", "leads", "conversations", "messages", "ads", "campaigns"),
    shared=("ads", "campaigns"),
    build_customers=customer_files.build_profiles,
    description=(
        "cache/customers/<id>.json: one customer 360 file per customer (customer, leads, "
        "conversations with recent messages, orders, attributed campaign/ad)."
    ),
)
CUSTOMER_INDEX = CacheFile(
    asset="customer_index_cache",
    path=customer_index.INDEX_DIR,
    schema_version=INDEX_SCHEMA_VERSION,
    reads=("customers", "orders", "leads"),
    build_segments=lambda conn, segments: customer_index.build_segments(
        conn, segments, REVENUE_STATUSES
    ),
    description=(
        "cache/customers/index.json (the manifest: per segment its count, bytes, watermark) and "
        "cache/customers/index/<segment>.json: every customer with tier, orders, revenue and "
        f"leads, in segments of {customer_index.SEGMENT_WIDTH} ids; a change rewrites only its "
        "customers' segments and the manifest."
    ),
)
MARKETING_INSIGHTS = CacheFile(
    asset="marketing_insights_cache",
    path=insights.INSIGHTS_FILE,
    schema_version=insights.SCHEMA_VERSION,
    reads=insights.READS,
    build=insights.build_recent,
    description=(
        "cache/marketing/insights.json: spend, impressions, clicks and ratios by day and by "
        "campaign over the last N days, for the UI's marketing page."
    ),
)
ANALYTICS_SUMMARY = CacheFile(
    asset="analytics_summary",
    path=summary.SUMMARY_FILE,
    schema_version=SUMMARY_SCHEMA_VERSION,
    reads=summary.READS,
    build=summary.build_validated_summary,
    description=(
        "cache/analytics/summary.json: revenue, customers by tier, ad spend, leads, cost per "
        "lead, first-touch ROAS and data freshness, computed in SQL from one consistent "
        "snapshot of the source-of-truth database and validated against "
        "docs/schemas/summary.schema.json before it is written."
    ),
)

FILES: tuple[CacheFile, ...] = (
    CUSTOMER_PROFILES,
    CUSTOMER_INDEX,
    MARKETING_INSIGHTS,
    ANALYTICS_SUMMARY,
)
BY_ASSET = {f.asset: f for f in FILES}
# Every table some file is built from: the change-log entities the sensor and worker follow.
SOURCE_TABLES = tuple(sorted({t for f in FILES for t in f.reads}))


def stale_files(entities: Iterable[str]) -> list[CacheFile]:
    """The files a change to any of `entities` makes stale, in registry order."""
    changed = set(entities)
    return [f for f in FILES if changed.intersection(f.reads)]


def build_customer_profile(conn: Connection, customer_id: int) -> Payload | None:
    """One customer's 360 payload, or None when the customer does not exist.

    An unknown id (a typo, a scan) costs one indexed lookup, not the profile's queries.
    """
    if conn.execute(_CUSTOMER_EXISTS, {"id": customer_id}).first() is None:
        return None
    return CUSTOMER_PROFILES.build_customers(conn, [customer_id]).get(customer_id)


_CUSTOMER_EXISTS = text("SELECT 1 FROM customers WHERE id = :id")
