"""The status of every cache file of the registry, read through its store (folder or S3).

A file is *behind* when a finished change to one of the tables it is built from (txid below the
snapshot's xmin, the rule of `crm_pipeline.db.changelog`) has a txid at or above the watermark
the file records; it is *stale* when the oldest such change is older than
`CRM_CACHE_LAG_GRACE_SECONDS` (the same rule as the `not_behind_change_log` asset checks: a
change seconds old is normal, the worker or the reconciler is on it).

Per-customer files are summarised: how many there are, the oldest generated of those read (all
of them up to a bound), and which recently changed customers' files are behind, as the asset
check decides it, plus changes to the tables every customer file reads (`shared`) or a
TRUNCATE past the oldest file's watermark. The customer index is read from its manifest: its
segments and customers, and which recently changed customers' segments are behind (the asset
check's rule), plus a TRUNCATE past the oldest segment's watermark.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

from crm_pipeline.cache import customer_index, registry
from crm_pipeline.cache.registry import CacheFile
from crm_pipeline.cache.stores import Store
from crm_pipeline.db.changelog import recently_changed_customers, unreflected_changes
from crm_pipeline.status.database import Problem, problem

# Customer files read for the summary, and recently changed customers checked: every read is a
# GET on S3, and the probe must answer in seconds.
LOCAL_READS, REMOTE_READS = 5000, 200
LOCAL_CHANGED, REMOTE_CHANGED = 1000, 200
SAMPLE = 10

_FINISHED = "txid < pg_snapshot_xmin(pg_current_snapshot())"
_CUSTOMERS_UNREFLECTED = text(
    "SELECT count(*) AS changes, min(l.changed_at) AS oldest,"
    " extract(epoch FROM now() - min(l.changed_at)) AS oldest_age"
    " FROM unnest(CAST(:ids AS bigint[]), CAST(:marks AS text[])) AS w(customer_id, mark)"
    f" JOIN change_log l ON l.customer_id = w.customer_id AND l.{_FINISHED}"
    "  AND (w.mark IS NULL OR l.txid >= CAST(w.mark AS xid8))"
    "  AND l.entity = ANY(CAST(:entities AS text[]))"
)


def iso(value: dt.datetime | None) -> str | None:
    """A timestamp as ISO 8601 in UTC (None stays None)."""
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") if value else None


def read_document(store: Store, relative: str) -> dict | None:
    """The file's document; None when there is none or it is not a JSON object (a reader
    rebuilds such a file, so for the status it is as good as missing)."""
    try:
        document = store.read_document(relative)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _watermark(document: dict | None) -> str | None:
    mark = str((document or {}).get("watermark", ""))
    return mark if mark.isdigit() else None


def _age(document: dict | None, now: dt.datetime) -> float | None:
    try:
        generated = dt.datetime.fromisoformat(str(document["generated_at"]))
    except (TypeError, KeyError, ValueError):
        return None
    return round((now - generated).total_seconds(), 1)


@dataclass
class Lag:
    """Finished changes a file does not reflect yet: how many, since when, past the grace?"""

    changes: int = 0
    oldest: dt.datetime | None = None
    oldest_age: float | None = None

    def add(self, changes: int, oldest: dt.datetime | None, oldest_age: float | None) -> None:
        """Add changes not reflected (of `unreflected_changes`, `_CUSTOMERS_UNREFLECTED`)."""
        if not changes:
            return
        self.changes += changes
        if self.oldest is None or oldest < self.oldest:
            self.oldest, self.oldest_age = oldest, float(oldest_age)

    def fields(self, grace: float) -> dict[str, Any]:
        """The lag's part of a file's entry."""
        return {
            "pending_changes": self.changes,
            "oldest_pending_at": iso(self.oldest),
            "behind": self.changes > 0,
            "stale": self.oldest_age is not None and self.oldest_age > grace,
        }


def _lag(conn: Connection, entities, watermark: str | None, *, truncates_of=()) -> Lag:
    lag = Lag()
    found = unreflected_changes(conn, entities, watermark, truncates_of=truncates_of)
    lag.add(found.changes, found.oldest, found.oldest_age_seconds)
    return lag


def single_file(
    conn: Connection | None, store: Store, file: CacheFile, now: dt.datetime, grace: float
) -> dict[str, Any]:
    """The entry of one whole-table file (index, insights, summary)."""
    document = read_document(store, file.file())
    watermark = _watermark(document)
    entry: dict[str, Any] = {
        "asset": file.asset,
        "path": file.file(),
        "per_customer": False,
        "exists": document is not None,
        "generated_at": (document or {}).get("generated_at"),
        "age_seconds": _age(document, now),
        "watermark": watermark,
        "schema_version": (document or {}).get("schema_version"),
        "schema_current": None
        if document is None
        else document.get("schema_version") == file.schema_version,
        "pending_changes": None,
        "oldest_pending_at": None,
        "behind": None,
        "stale": None,
    }
    if conn is not None:
        entry.update(_lag(conn, file.reads, watermark).fields(grace))
    return entry


@dataclass
class _CustomerFiles:
    """What was read of the per-customer files, by customer id."""

    names: list[str]
    documents: dict[int, dict | None] = field(default_factory=dict)

    def read(self, store: Store, customer_id: int) -> dict | None:
        if customer_id not in self.documents:
            self.documents[customer_id] = read_document(
                store, registry.CUSTOMER_PROFILES.file(customer_id)
            )
        return self.documents[customer_id]


def customer_files(
    conn: Connection | None, store: Store, now: dt.datetime, grace: float
) -> dict[str, Any]:
    """The summary entry of the per-customer files (`customers/<id>.json`)."""
    profiles = registry.CUSTOMER_PROFILES
    ids = sorted(int(n[:-5]) for n in store.names(profiles.path) if n[:-5].isdigit())
    files = _CustomerFiles([f"{i}.json" for i in ids])
    for customer_id in ids[: REMOTE_READS if store.remote else LOCAL_READS]:
        files.read(store, customer_id)
    read = [d for d in files.documents.values() if d is not None]
    oldest = min(read, key=lambda d: int(_watermark(d) or 0), default=None)
    entry: dict[str, Any] = {
        "asset": profiles.asset,
        "path": f"{profiles.path}/",
        "per_customer": True,
        "files": len(ids),
        "read": len(read),
        "oldest_generated_at": (oldest or {}).get("generated_at"),
        "oldest_age_seconds": _age(oldest, now),
        "oldest_watermark": _watermark(oldest),
        "customers_checked": None,
        "customers_behind": None,
        "sample_behind": [],
        "pending_changes": None,
        "oldest_pending_at": None,
        "behind": None,
        "stale": None,
    }
    if conn is not None:
        entry.update(_customers_lag(conn, store, files, _watermark(oldest), grace))
    return entry


def _customers_lag(
    conn: Connection, store: Store, files: _CustomerFiles, oldest_mark: str | None, grace: float
) -> dict[str, Any]:
    """Recently changed customers whose file is behind (missing while the customer exists,
    or older than their last change), and changes every customer file reads."""
    limit = REMOTE_CHANGED if store.remote else LOCAL_CHANGED
    changed = recently_changed_customers(conn, limit)
    behind: dict[int, str | None] = {}
    for customer_id, txid, exists in changed:
        mark = _watermark(files.read(store, customer_id))
        if (exists and mark is None) or (mark is not None and int(mark) <= int(txid)):
            behind[customer_id] = mark
    lag = _behind_lag(conn, registry.CUSTOMER_PROFILES, behind)
    if files.names:  # a change every file reads makes even the oldest file behind
        _add_shared(conn, lag, registry.CUSTOMER_PROFILES, oldest_mark)
    return {
        "customers_checked": len(changed),
        "customers_behind": len(behind),
        "sample_behind": sorted(behind)[:SAMPLE],
        **lag.fields(grace),
    }


def _behind_lag(conn: Connection, file: CacheFile, behind: dict[int, str | None]) -> Lag:
    """The changes of `behind` customers (id -> the watermark of what holds them) to tables
    `file` reads, at or above that watermark."""
    lag = Lag()
    if behind:
        params = {"ids": list(behind), "marks": list(behind.values()), "entities": list(file.reads)}
        row = conn.execute(_CUSTOMERS_UNREFLECTED, params).one()
        lag.add(row.changes, row.oldest, row.oldest_age)
    return lag


def _add_shared(conn: Connection, lag: Lag, file: CacheFile, oldest_mark: str | None) -> None:
    """Add the changes every part of targeted `file` reads (its `shared` tables, a TRUNCATE)
    past `oldest_mark`: they make even the oldest part behind."""
    shared = _lag(conn, file.shared, oldest_mark, truncates_of=file.reads)
    lag.changes += shared.changes
    if shared.oldest is not None and (lag.oldest is None or shared.oldest < lag.oldest):
        lag.oldest, lag.oldest_age = shared.oldest, shared.oldest_age


def index_segments(
    conn: Connection | None, store: Store, now: dt.datetime, grace: float
) -> dict[str, Any]:
    """The entry of the customer index: its manifest, and the recently changed customers whose
    segment is behind."""
    index = registry.CUSTOMER_INDEX
    manifest = read_document(store, index.file())
    entries = customer_index.manifest_entries(manifest)
    live = [e for e in entries.values() if e.count > 0]
    oldest = min((e.watermark for e in live), default=None)
    entry = single_file(None, store, index, now, grace)
    entry.update(
        path=f"{index.path}/",
        segments=len(live),
        customers=(manifest or {}).get("count"),
        bytes=(manifest or {}).get("bytes"),
        oldest_segment_watermark=None if oldest is None else str(oldest),
        customers_checked=None,
        customers_behind=None,
        sample_behind=[],
    )
    if conn is None:
        return entry
    limit = REMOTE_CHANGED if store.remote else LOCAL_CHANGED
    changed = recently_changed_customers(conn, limit, entities=index.reads)
    behind_ids = customer_index.customers_behind(manifest, changed)
    marks = {c: _segment_mark(entries, c) for c in behind_ids}
    lag = _behind_lag(conn, index, marks)
    if manifest is not None:
        _add_shared(conn, lag, index, None if oldest is None else str(oldest))
    entry.update(
        customers_checked=len(changed),
        customers_behind=len(behind_ids),
        sample_behind=behind_ids[:SAMPLE],
        **lag.fields(grace),
    )
    return entry


def _segment_mark(entries: dict[int, customer_index.SegmentEntry], customer_id: int) -> str | None:
    entry = entries.get(customer_index.segment_of(customer_id))
    return None if entry is None or entry.count == 0 else str(entry.watermark)


def cache_problems(entries: list[dict[str, Any]], grace: float) -> list[Problem]:
    """A problem per file behind the change log past the grace period."""
    found = []
    for entry in entries:
        if entry.get("stale"):
            found.append(
                problem(
                    "cache_file_stale",
                    f"{entry['path']} is behind the change log: {entry['pending_changes']} "
                    f"change(s) since {entry['oldest_pending_at']} not reflected after the "
                    f"{grace:.0f}s grace (CRM_CACHE_LAG_GRACE_SECONDS)",
                )
            )
    return found
