"""Custom insights as assets: each entry of `CRM_CUSTOM_INSIGHTS` becomes a raw asset and a table.

`fb_custom_<name>_raw` reads the entry's /insights query once per account window and lands one
Parquet file per account-day under `raw/custom_<name>/` (the built-in insights' Hive layout);
`fb_custom_<name>` upserts each account-day into its PostgreSQL table and mirrors Meta: rows it
no longer reports for that account-day are deleted, unless some were quarantined. Both take the
built-in insights' partitions, single-run backfills, Graph API pool and retries; definitions.py
holds them to the same freshness policy by group, and the sync schedules and `crm-pipeline sync`
run them with the built-in insights.

The file is read when this module is imported, i.e. when the code location loads: a wrong entry
fails the load with a ConfigError naming the file, the entry and what to change.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg

from crm_pipeline import lake
from crm_pipeline.config import ConfigError, load_settings
from crm_pipeline.db.custom_tables import custom_table, delete_unreported, ensure_table
from crm_pipeline.db.upsert import bulk_upsert
from crm_pipeline.defs import groups
from crm_pipeline.defs.facebook.insight_windows import (
    LandedDay,
    LandedWindow,
    Window,
    land_windows,
    split_by_day,
)
from crm_pipeline.defs.facebook.partitions import (
    account_and_day,
    add_partition_metadata,
    backfill_policy_beta_silenced,
    insights_partitions,
)
from crm_pipeline.defs.facebook.resources import GraphApiResource
from crm_pipeline.defs.facebook.step_rules import GRAPH_POOL, RETRY, failing_fast, quarantine_spec
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.facebook import validate
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.custom_insights import (
    CustomInsight,
    CustomInsightsError,
    load_custom_insights,
    read_custom_insights,
)
from crm_pipeline.facebook.ids import meta_account_id
from crm_pipeline.facebook.transforms import to_arrow

__all__ = [
    "CUSTOM_INSIGHTS",
    "CUSTOM_INSIGHT_ASSETS",
    "configured_custom_insights",
    "custom_insight_assets",
]

_OWNERS = ["team:data-engineering"]


def custom_insight_assets(entries: Iterable[CustomInsight]) -> list[dg.AssetsDefinition]:
    """The raw asset and the table asset of each entry, in the file's order."""
    with backfill_policy_beta_silenced():
        return [asset for entry in entries for asset in (_raw_asset(entry), _table_asset(entry))]


def _raw_asset(entry: CustomInsight) -> dg.AssetsDefinition:
    breakdowns = ", ".join(entry.breakdowns) or "none"
    windows = ", ".join(entry.action_attribution_windows) or "Meta's default"

    @dg.asset(
        name=entry.raw_asset,
        partitions_def=insights_partitions,
        # A backfill of many days is one run: each account's days are one /insights query.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=groups.FACEBOOK_RAW,
        kinds={"facebook", "parquet"},
        owners=_OWNERS,
        retry_policy=RETRY,
        pool=GRAPH_POOL,
        check_specs=[quarantine_spec(entry.raw_asset)],
        description=(
            f"Custom insights {entry.name} (CRM_CUSTOM_INSIGHTS): {entry.level}-level daily "
            f"{', '.join(entry.fields)} by breakdowns {breakdowns}, attribution windows "
            f"{windows}, of one ad account and day, landed as Parquet under "
            f"CRM_DATA_DIR/raw/{entry.stream}/ (paged GETs, one query per account window)."
        ),
    )
    def _raw(
        context: dg.AssetExecutionContext, graph_api: GraphApiResource, storage: StorageResource
    ) -> dg.MaterializeResult:
        return _fetch_and_land(context, entry, graph_api, storage)

    return _raw


def _fetch_and_land(
    context: dg.AssetExecutionContext,
    entry: CustomInsight,
    graph_api: GraphApiResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    """Read the run's account-days of `entry` (accounts at once) and land one Parquet file per
    account-day."""
    ids, kinds = entry.id_columns, entry.value_kinds

    def check(bucket: list[dict], day: str) -> validate.Checked:
        return validate.check_custom_insights(bucket, day, ids, kinds)

    def land_window(client: GraphClient, window: Window) -> LandedWindow:
        account_id = window.account_id
        rows = list(
            read_custom_insights(
                client, entry, account_id, window.since, window.until, limit=graph_api.page_size
            )
        )
        log = f"{len(rows)} {entry.name} rows for {account_id} {window.since}..{window.until}"
        landed = LandedWindow(window, [], log)
        for day, checked in split_by_day(rows, window.days, check).items():
            day_meta, bad_path = _land_day(storage, entry, account_id, day, checked)
            landed.days.append(LandedDay(day, day_meta, checked.bad, bad_path))
        return landed

    return land_windows(context, graph_api, entry.raw_asset, land_window)


def _land_day(
    storage: StorageResource,
    entry: CustomInsight,
    account_id: str,
    day: str,
    checked: validate.Checked,
) -> tuple[dict[str, Any], Any]:
    """Land one account-day's good rows (an empty file when none) and quarantine its bad ones."""
    partition = f"account={account_id}/date={day}"
    table = to_arrow(checked.good, entry.raw_columns)
    path = lake.land_partition(storage.data_path(), entry.stream, partition, table)
    bad_path = lake.write_quarantine(storage.data_path(), entry.stream, partition, checked.bad)
    day_meta = {
        "rows": table.num_rows,
        "quarantined": len(checked.bad),
        "path": dg.MetadataValue.path(str(path)),
    }
    return day_meta, bad_path


def _table_asset(entry: CustomInsight) -> dg.AssetsDefinition:
    @dg.asset(
        name=entry.table,
        partitions_def=insights_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[entry.raw_asset],
        group_name=groups.FACEBOOK,
        kinds={"postgres"},
        owners=_OWNERS,
        description=(
            f"PostgreSQL table `{entry.table}` (CRM_CUSTOM_INSIGHTS), created by the first run: "
            f"one row per {', '.join(entry.key_columns)}, upserted from the raw Parquet of each "
            "account-day; rows Meta no longer reports for the account-day are deleted."
        ),
    )
    def _table(
        context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
    ) -> dg.MaterializeResult:
        return _load(context, entry, postgres, storage)

    return _table


def _load(
    context: dg.AssetExecutionContext,
    entry: CustomInsight,
    postgres: PostgresResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    """Upsert the run's account-days into the entry's table, one transaction each (as
    `ad_insights_daily` does, for the same reasons)."""
    table = custom_table(entry.table, entry.id_columns, entry.breakdowns, entry.value_kinds)
    engine = postgres.engine()
    with failing_fast(), engine.begin() as conn:
        created = ensure_table(conn, table)
    if created:
        context.log.info(f"created table {entry.table}")
    totals: dict[str, int] = {}
    keys = sorted(context.partition_keys, key=str)
    for key in keys:
        account_id, day = account_and_day(key)
        partition = f"account={account_id}/date={day}"
        rows = entry.table_rows(lake.read_partition(storage.data_path(), entry.stream, partition))
        # With malformed rows quarantined we cannot tell what Meta really reports: keep all.
        mirror = not lake.quarantine_path(storage.data_path(), entry.stream, partition).exists()
        with engine.begin() as conn:
            result = bulk_upsert(conn, table, rows)
            deleted = (
                delete_unreported(conn, table, meta_account_id(account_id), day, rows)
                if mirror
                else 0
            )
        counts = {
            "rows": result.staged,
            "inserted": result.inserted,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "deleted": deleted,
        }
        context.log.info(f"{entry.table} {account_id} {day}: {counts}")
        metadata = {**counts, "upsert_seconds": round(result.seconds, 3)}
        add_partition_metadata(context, metadata, key, len(keys))
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
    metadata: dict[str, Any] = {
        "table": entry.table,
        "database": postgres.display_url(),
        "created": created,
    }
    if len(keys) > 1:
        metadata.update(
            {"range_partitions": len(keys), **{f"range_{k}": v for k, v in totals.items()}}
        )
    return dg.MaterializeResult(metadata=metadata)


def configured_custom_insights(path: Path | None) -> tuple[CustomInsight, ...]:
    """The entries of the custom insights file at `path` (none when unset); a file that cannot be
    used is a ConfigError naming the file, each wrong entry and what to change."""
    try:
        return load_custom_insights(path)
    except CustomInsightsError as exc:
        raise ConfigError(str(exc)) from None


# Read when the code location loads: a wrong file fails the load, naming what to change.
CUSTOM_INSIGHTS = configured_custom_insights(load_settings().graph.custom_insights)
CUSTOM_INSIGHT_ASSETS = custom_insight_assets(CUSTOM_INSIGHTS)
