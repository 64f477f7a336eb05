"""One change window turned into rebuilt cache files, for the cache worker.

The window and the targeted files it makes stale (the customers' 360 files and their customer
index segments) are read in ONE snapshot, so those files reflect at least every change the
window holds; they cost O(changed customers), so they are never deferred. Whole-table files
(insights, summary) are rebuilt separately with `rebuild_file` (each in its own, later
snapshot), so the worker can coalesce them. Which files a change makes stale is the registry's
answer (`crm_pipeline.cache.registry`), the same the change-log sensor uses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Connection, Engine

from crm_pipeline.cache.rebuild import (
    IndexSegments,
    Rebuilt,
    rebuild_all_customers,
    rebuild_customers,
    rebuild_file,
    rebuild_index,
)
from crm_pipeline.cache.registry import CUSTOMER_INDEX, CUSTOMER_PROFILES, CacheFile, stale_files
from crm_pipeline.cache.stores import Location, open_store
from crm_pipeline.db.changelog import (
    ChangeWindow,
    changed_customers,
    read_change_window,
)
from crm_pipeline.db.engine import read_snapshot


@dataclass(frozen=True)
class FileReport:
    """What one batch did to one registry asset (the Dagster report's metadata)."""

    asset: str
    path: str  # the file, or the folder of the per-customer files
    watermark: str
    mode: str  # "targeted" or "full" (customer files), "file" (a whole-table file)
    written: int
    removed: int = 0  # customer files of customers that no longer exist
    superseded: int = 0  # a newer file was already there (another writer was faster)
    customer_ids: tuple[int, ...] = ()  # targeted mode: the customers rebuilt
    customers: int = 0  # how many customers the batch covered
    latency_ms: float | None = None  # see `latency_ms` below
    segments: tuple[int, ...] = ()  # the customer index: the segments written
    bytes: int | None = None  # the customer index: bytes written (segments and manifest)


@dataclass(frozen=True)
class WindowRebuild:
    """A window read, and its targeted files rebuilt in the same snapshot."""

    window: ChangeWindow
    whole_files: tuple[CacheFile, ...]  # stale whole-table files, still to be rebuilt
    targeted: tuple[FileReport, ...]  # one per targeted file rebuilt (none: nothing stale)


def latency_ms(noticed_at: float | None) -> float | None:
    """Milliseconds from `noticed_at` (time.monotonic() when the worker took the batch's first
    notification off its connection) to now (just after the files were published).

    PostgreSQL sends a notification when the writer's transaction commits, so for an idle
    worker this is commit-to-file latency. When the notice arrived while the worker was busy
    with an earlier batch, the time it waited in the socket is not included. Batches started
    by the backstop poll or a catch-up have no notification: None.
    """
    if noticed_at is None:
        return None
    return round((time.monotonic() - noticed_at) * 1000, 1)


def read_and_rebuild_customers(
    engine: Engine,
    cache_dir: Location,
    since: str | None,
    max_targeted: int,
    noticed_at: float | None = None,
) -> WindowRebuild:
    """Read the changes committed since `since` and rebuild the targeted files they touch (the
    customers' 360 files and index segments), all in one snapshot; return the window (its
    `upto` is the next `since`) and the whole-table files it made stale."""
    reports = []
    with read_snapshot(engine) as conn:
        window = read_change_window(conn, since)
        stale = stale_files(window.entity_names)
        for file in (f for f in stale if f.targeted):
            report = _rebuild_targeted(conn, cache_dir, window, max_targeted, file)
            if report is not None:
                reports.append(report)
    whole = tuple(f for f in stale if not f.targeted)
    return WindowRebuild(window, whole, tuple(_with_latency(r, noticed_at) for r in reports))


def rebuild_whole_file(
    engine: Engine, cache_dir: Location, file: CacheFile, noticed_at: float | None = None
) -> FileReport:
    """Rebuild one whole-table file from a fresh snapshot and publish it forward-only."""
    rebuilt: Rebuilt = rebuild_file(engine, cache_dir, file)
    return FileReport(
        asset=file.asset,
        path=str(rebuilt.outcome.path),
        watermark=rebuilt.watermark,
        mode="file",
        written=int(rebuilt.outcome.written),
        superseded=int(not rebuilt.outcome.written),
        latency_ms=latency_ms(noticed_at),
    )


def _with_latency(report: FileReport, noticed_at: float | None) -> FileReport:
    return replace(report, latency_ms=latency_ms(noticed_at))


def _rebuild_targeted(
    conn: Connection,
    cache_dir: Location,
    window: ChangeWindow,
    max_targeted: int,
    file: CacheFile,
) -> FileReport | None:
    """Rebuild the parts of targeted `file` the window's changes name (all of them after a
    TRUNCATE, a change to a shared table, or too many customers)."""
    ids, complete = changed_customers(conn, window.since, window.upto, max_targeted, file.reads)
    everyone = not complete or touches_every_customer(window, file)
    if not everyone and not ids:
        return None  # e.g. a lead linked to no customer
    if file.segmented:
        targets = None if everyone else ids
        return index_report(rebuild_index(conn, cache_dir, targets), cache_dir, targets)
    if everyone:
        return rebuild_every_customer(conn, cache_dir)
    result = rebuild_customers(conn, cache_dir, ids)
    return FileReport(
        asset=CUSTOMER_PROFILES.asset,
        path=str(open_store(cache_dir).where(CUSTOMER_PROFILES.path)),
        watermark=result.watermark,
        mode="targeted",
        written=len(result.written),
        removed=len(result.removed),
        superseded=len(result.superseded),
        customer_ids=tuple(sorted(set(ids))),
        customers=len(set(ids)),
    )


def touches_every_customer(window: ChangeWindow, file: CacheFile = CUSTOMER_PROFILES) -> bool:
    """Did the window change a table every customer's part of targeted `file` reads (`shared`)?
    Such changes name no customer, so every part is stale. (A TRUNCATE is `changed_customers`'
    to report.)"""
    return any(file.stale_for_all(e) for e in window.entity_names)


def index_report(
    result: IndexSegments, cache_dir: Location, ids: Sequence[int] | None = None
) -> FileReport:
    """The report of a customer index rebuild (files: segments written or removed) for the
    customers `ids` (None: all)."""
    targeted = ids is not None and result.mode == "targeted"
    return FileReport(
        asset=CUSTOMER_INDEX.asset,
        path=str(open_store(cache_dir).where(CUSTOMER_INDEX.path)),
        watermark=result.watermark,
        mode=result.mode,
        written=len(result.written),
        removed=len(result.removed),
        superseded=len(result.superseded),
        customer_ids=tuple(sorted(set(ids))) if targeted else (),
        customers=len(set(ids)) if targeted else result.customers,
        segments=tuple(result.written),
        bytes=result.bytes,
    )


def rebuild_every_customer(conn: Connection, cache_dir: Location) -> FileReport:
    """Rebuild every customer's file from `conn`'s snapshot, and remove the files of customers
    that no longer exist (forward-only, like every write)."""
    result = rebuild_all_customers(conn, cache_dir)
    folder = open_store(cache_dir).where(CUSTOMER_PROFILES.path)
    return FileReport(
        asset=CUSTOMER_PROFILES.asset,
        path=str(folder),
        watermark=result.watermark,
        mode="full",
        written=len(result.written),
        removed=len(result.removed),
        superseded=len(result.superseded),
        customers=len(result.written) + len(result.superseded),
    )
