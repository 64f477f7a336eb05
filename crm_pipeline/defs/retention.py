"""`personal_data_retention`: personal data kept past its retention is removed, daily.

Lead Ads answers and Messenger messages reach us twice besides their tables: as raw Parquet
under `CRM_DATA_DIR` (landed by the Facebook sync) and as webhook events in `webhook_inbox`.
Both copies are removed once older than `CRM_RAW_RETENTION_DAYS` / `CRM_INBOX_RETENTION_DAYS`
(the rules are in `crm_pipeline.lake.retention` and `crm_pipeline.db.inbox_retention`). It
spans the raw zone and the CRM database, so it lives beside the sync schedules, above the
domain folders.
"""

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from crm_pipeline.config import load_settings
from crm_pipeline.db.inbox_retention import prune_inbox
from crm_pipeline.defs import groups
from crm_pipeline.defs.resources import PostgresResource, StorageResource
from crm_pipeline.lake.retention import PruneReport, prune_raw

_T = TypeVar("_T")


@dg.asset(
    group_name=groups.PRIVACY,
    kinds={"parquet", "postgres"},
    owners=["team:data-engineering"],
    description=(
        "Removes personal data kept past its retention: raw Parquet landings (and quarantined "
        "rows) under CRM_DATA_DIR older than CRM_RAW_RETENTION_DAYS (default 30), and "
        "webhook_inbox events processed or rejected more than CRM_INBOX_RETENTION_DAYS ago "
        "(default 30; pending events are never removed). The metadata counts what went, per "
        "stream; it never shows a removed value."
    ),
)
def personal_data_retention(
    context: dg.AssetExecutionContext, postgres: PostgresResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Prune the raw landing zone and the webhook inbox; report counts and bytes.

    Both are attempted even when the other fails (one broken part must not keep the other's
    personal data past its retention); the run then fails with the first error.
    """
    settings = load_settings().retention
    now = dt.datetime.now(dt.UTC)
    raw_cutoff = now - dt.timedelta(days=settings.raw_days)
    inbox_cutoff = now - dt.timedelta(days=settings.inbox_days)
    data_dir = storage.data_path()
    errors: list[Exception] = []

    def inbox() -> int:
        with postgres.engine().connect() as conn:
            return prune_inbox(conn, inbox_cutoff)

    raw = _attempt(context, "raw landing zone", lambda: prune_raw(data_dir, raw_cutoff), errors)
    inbox_rows = _attempt(context, "webhook inbox", inbox, errors)
    if errors:
        raise errors[0]
    assert raw is not None and inbox_rows is not None
    context.log.info(
        f"retention: {raw.raw_files} raw file(s) ({raw.raw_bytes} bytes) and "
        f"{raw.quarantine_files} quarantine file(s) landed before {raw_cutoff:%Y-%m-%d %H:%M}Z "
        f"removed; {inbox_rows} webhook_inbox row(s) handled before "
        f"{inbox_cutoff:%Y-%m-%d %H:%M}Z deleted"
    )
    return dg.MaterializeResult(
        metadata={
            **_raw_metadata(raw, settings.raw_days),
            "inbox_retention_days": settings.inbox_days,
            "inbox_cutoff": inbox_cutoff.isoformat(timespec="seconds"),
            "inbox_rows_removed": inbox_rows,
            "data_dir": dg.MetadataValue.path(str(data_dir)),
        }
    )


def _attempt(
    context: dg.AssetExecutionContext, what: str, prune: Callable[[], _T], errors: list
) -> _T | None:
    """`prune()`, or None with its error logged (by type: a message could name a file) and
    kept in `errors`."""
    try:
        return prune()
    except Exception as error:
        context.log.error(f"retention of the {what} failed: {type(error).__name__}")
        errors.append(error)
        return None


def _raw_metadata(report: PruneReport, days: int) -> dict[str, Any]:
    """What the raw prune removed, as materialisation metadata (counts and bytes only)."""
    return {
        "raw_retention_days": days,
        "raw_cutoff": report.cutoff.isoformat(timespec="seconds"),
        "raw_files_removed": report.raw_files,
        "raw_bytes_removed": report.raw_bytes,
        "quarantine_files_removed": report.quarantine_files,
        "quarantine_bytes_removed": report.quarantine_bytes,
        "directories_removed": report.directories,
        "links_skipped": report.links_skipped,
        "removed_by_stream": dg.MetadataValue.json(report.by_stream()),
    }


personal_data_retention_job = dg.define_asset_job(
    "personal_data_retention_job",
    selection=[personal_data_retention],
    description="Remove raw landings and processed webhook events past their retention.",
)

daily_personal_data_retention = dg.ScheduleDefinition(
    name="daily_personal_data_retention",
    job=personal_data_retention_job,
    # After the 03:30 attribution re-sync, which lands the days it revises anew (fresh files).
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Daily retention of personal data: raw landings older than CRM_RAW_RETENTION_DAYS and "
        "webhook events handled more than CRM_INBOX_RETENTION_DAYS ago."
    ),
)
