"""`crm-pipeline status`: one screen (or `--json`) saying whether the pipeline is healthy.

It reads, without changing anything: the database (reachable, schema at head), every cache file
of the registry through its store (age, watermark, behind the change log), the cache worker's
heartbeat and lag, the last sync of each ad account and stream, the webhook inbox, and the
failing asset checks of the Dagster instance.

It exits 1 when something needs attention, so it works as a probe (README, "Status"):

- `database_unreachable`: the database does not answer;
- `database_not_at_head`: its schema revision is not this code's Alembic head;
- `cache_store_unavailable`: the cache store (folder or S3) cannot be read;
- `cache_file_stale`: a cache file is behind the change log by a change older than
  `CRM_CACHE_LAG_GRACE_SECONDS` (a per-customer file of a recently changed customer included);
- `cache_worker_down`: the worker's heartbeat is absent or older than
  `CRM_CACHE_WORKER_STALE_SECONDS` while some cache file is behind (any pending change);
- `webhook_events_rejected`: webhook events were rejected in the last 24 hours;
- `asset_checks_failing`: an asset check's latest evaluation failed with severity ERROR;
- `dagster_instance_unreadable`: an instance is configured but cannot be read.

Everything else (sync ages, pending webhook events, WARN checks) is shown, never failed on.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any, TextIO

from crm_pipeline.cache.registry import FILES
from crm_pipeline.cache.stores import store_from_settings
from crm_pipeline.config import Settings
from crm_pipeline.db.demo_mark import is_demo_database
from crm_pipeline.status import activity, cache_state
from crm_pipeline.status.dagster_checks import dagster_section
from crm_pipeline.status.database import Problem, database_status, first_line, problem, snapshot
from crm_pipeline.status.screen import render, render_json

STATUS_VERSION = 1  # of the JSON document: bumped when a field changes meaning or goes

__all__ = ["STATUS_VERSION", "collect", "run_status"]


def run_status(settings: Settings, *, as_json: bool = False, out: TextIO | None = None) -> int:
    """Print the status (a table, or the JSON document); 1 when a problem needs attention."""
    document = collect(settings)
    out = out or sys.stdout
    (render_json if as_json else render)(document, out)
    return 1 if document["problems"] else 0


def collect(settings: Settings) -> dict[str, Any]:
    """The status document (its shape is documented in the README, "Status")."""
    checked_at = dt.datetime.now(dt.UTC)
    database = database_status(settings)
    problems: list[Problem] = list(database.problems)
    grace = float(settings.sensors.cache_lag_grace_seconds)
    document: dict[str, Any] = {
        "status_version": STATUS_VERSION,
        "checked_at": checked_at.isoformat(timespec="seconds"),
        "ok": True,
        "problems": problems,
        "database": database.section,
        "cache": {"location": settings.cache_location, "grace_seconds": grace, "error": None},
        "cache_worker": None,
        "sync": None,
        "webhooks": None,
        "dagster": None,
    }
    if database.engine is None or not database.section["at_head"]:
        problems += _cache_files(document, settings, None, checked_at, grace)
    else:
        with snapshot(database.engine) as conn:
            problems += _from_database(document, settings, conn, checked_at, grace)
    if database.engine is not None:
        database.engine.dispose()
    document["dagster"], found = dagster_section(settings)
    problems += found
    document["ok"] = not problems
    return document


def _cache_files(document, settings, conn, checked_at, grace) -> list[Problem]:
    """The `cache.files` entries; a problem per stale file, or one when the store fails."""
    try:
        store = store_from_settings(settings)
        files = [
            cache_state.customer_files(conn, store, checked_at, grace)
            if f.per_customer
            else cache_state.index_segments(conn, store, checked_at, grace)
            if f.segmented
            else cache_state.single_file(conn, store, f, checked_at, grace)
            for f in FILES
        ]
    except OSError as exc:  # StoreUnavailable, or a folder we may not read
        document["cache"]["error"] = first_line(exc)
        document["cache"]["files"] = []
        return [problem("cache_store_unavailable", f"cache store: {first_line(exc)}")]
    document["cache"]["files"] = files
    return cache_state.cache_problems(files, grace)


def _from_database(document, settings, conn, checked_at, grace) -> list[Problem]:
    """Every section read from the database snapshot `conn`, and their problems."""
    document["database"]["demo_database"] = is_demo_database(conn)
    problems = _cache_files(document, settings, conn, checked_at, grace)
    worker = activity.worker_section(
        conn, settings.worker.name, float(settings.worker.heartbeat_stale_seconds)
    )
    document["cache_worker"] = worker
    problems += activity.worker_problems(worker, document["cache"]["files"])
    document["sync"] = activity.sync_section(conn, settings.data_dir)
    document["webhooks"] = activity.webhooks_section(conn)
    problems += activity.webhook_problems(document["webhooks"])
    return problems
