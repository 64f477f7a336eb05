"""Checks on the JSON cache: no file lags the change log, and summary.json keeps its schema.

A cache file records the change-log watermark it reflects. It is *behind* when a change to one
of the tables it is built from has finished (txid below the snapshot xmin, so committed or
rolled back for good) with a txid at or above that watermark, and that change is older than a
grace period: the change-log sensor needs a tick and a run to catch up, and a change seconds
old is normal, not a fault. Targeted files are checked per recently changed customer: their 360
file, and their customer index segment as the manifest lists it.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import orjson
from sqlalchemy import Connection

from crm_pipeline.cache import registry
from crm_pipeline.cache.customer_index import customers_behind
from crm_pipeline.cache.stores import Store
from crm_pipeline.cache.summary import validate_summary
from crm_pipeline.config import load_settings
from crm_pipeline.db.changelog import recently_changed_customers, unreflected_changes
from crm_pipeline.defs.resources import PostgresResource, StorageResource

LAG_GRACE = dt.timedelta(seconds=load_settings().sensors.cache_lag_grace_seconds)
# Customer files checked per evaluation: the most recently changed customers first.
MAX_CUSTOMERS_CHECKED = 1000

# The single files, by asset key (targeted files are checked per customer below).
FILES = {dg.AssetKey(f.asset): f.file() for f in registry.FILES if not f.targeted}
_PROFILES = dg.AssetKey(registry.CUSTOMER_PROFILES.asset)  # named by the registry, not imported
_INDEX = dg.AssetKey(registry.CUSTOMER_INDEX.asset)


def entities_feeding(key: dg.AssetKey) -> list[str]:
    """The tables whose changes make this cache asset stale (the registry's `reads`)."""
    return sorted(registry.BY_ASSET[key.to_user_string()].reads)


def _read_watermark(store: Store, relative: str) -> str | None:
    try:
        document = store.read_document(relative)
        return None if document is None else str(document["watermark"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _file_lag(conn: Connection, store: Store, key: dg.AssetKey) -> dg.AssetCheckResult:
    path = store.where(FILES[key])
    watermark = _read_watermark(store, FILES[key])
    lag = unreflected_changes(conn, entities_feeding(key), watermark, older_than=LAG_GRACE)
    pending, oldest = lag.changes, lag.oldest
    missing = watermark is None
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="not_behind_change_log",
        passed=pending == 0 and not missing,
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "file_watermark": watermark or "(no file)",
            "pending_changes": pending,
            "oldest_pending": oldest.isoformat() if oldest else "",
            "grace_seconds": int(LAG_GRACE.total_seconds()),
        },
    )


def behind_customers(conn: Connection, store: Store, grace: dt.timedelta) -> list[int]:
    """Recently changed customers whose file is missing, stale, or should have been removed."""
    changed = recently_changed_customers(conn, MAX_CUSTOMERS_CHECKED, older_than=grace)
    behind = []
    for customer_id, txid, exists in changed:
        watermark = _read_watermark(store, registry.CUSTOMER_PROFILES.file(customer_id))
        # A live customer needs a current file; a deleted one needs none.
        stale = exists if watermark is None else int(watermark) <= int(txid)
        if stale:
            behind.append(customer_id)
    return sorted(behind)


def behind_in_index(conn: Connection, store: Store, grace: dt.timedelta) -> list[int]:
    """Recently changed customers (by a change to a table the index reads) whose segment, as
    the manifest lists it, does not reflect that change."""
    index = registry.CUSTOMER_INDEX
    try:
        manifest = store.read_document(index.file())
    except ValueError:
        manifest = None
    changed = recently_changed_customers(
        conn, MAX_CUSTOMERS_CHECKED, older_than=grace, entities=index.reads
    )
    return customers_behind(manifest, changed)


def _customers_check(key: dg.AssetKey, behind: list[int]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="not_behind_change_log",
        passed=not behind,
        metadata={
            "customers_behind": len(behind),
            "sample": dg.MetadataValue.json(behind[:10]),
            "checked_at_most": MAX_CUSTOMERS_CHECKED,
            "grace_seconds": int(LAG_GRACE.total_seconds()),
        },
    )


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            "not_behind_change_log",
            asset=key,
            description=(
                "The file reflects every change to its source tables older than "
                "CRM_CACHE_LAG_GRACE_SECONDS (default 300)."
            ),
        )
        for key in [*FILES, _PROFILES, _INDEX]
    ],
    can_subset=True,
    description="Cache files are not behind the change-log watermark.",
)
def cache_lag_checks(
    context: dg.AssetCheckExecutionContext, postgres: PostgresResource, storage: StorageResource
) -> Iterator[dg.AssetCheckResult]:
    """One lag check per cache asset selected in this run."""
    selected = {check.asset_key for check in context.selected_asset_check_keys}
    store = storage.cache_store()
    with postgres.engine().connect() as conn:
        for key in FILES:
            if key in selected:
                yield _file_lag(conn, store, key)
        if _PROFILES in selected:
            yield _customers_check(_PROFILES, behind_customers(conn, store, LAG_GRACE))
        if _INDEX in selected:
            yield _customers_check(_INDEX, behind_in_index(conn, store, LAG_GRACE))


@dg.asset_check(
    asset=dg.AssetKey(registry.ANALYTICS_SUMMARY.asset),
    description=(
        "summary.json as published parses and validates against docs/schemas/summary.schema.json."
    ),
)
def summary_matches_schema(storage: StorageResource) -> dg.AssetCheckResult:
    """Validate the file analysts read, as it is published now."""
    store = storage.cache_store()
    path = store.where(registry.ANALYTICS_SUMMARY.file())
    try:
        document = store.read_document(registry.ANALYTICS_SUMMARY.file())
        if document is None:
            raise FileNotFoundError(path)
        validate_summary(document)
    except FileNotFoundError:
        return dg.AssetCheckResult(passed=False, metadata={"error": f"{path} does not exist"})
    except (orjson.JSONDecodeError, ValueError) as exc:
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)[:2000]})
    return dg.AssetCheckResult(passed=True, metadata={"path": dg.MetadataValue.path(str(path))})


cache_checks = [cache_lag_checks, summary_matches_schema]
