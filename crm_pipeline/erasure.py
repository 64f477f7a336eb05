"""An erasure request carried out end to end: database, raw lake, cache files.

1. One SERIALIZABLE transaction finds every row of the person (`db/privacy/person.py`), deletes
   or anonymises them (`db/privacy/erase_rows.py`), records the erasure and keeps their
   identifiers only as keyed hashes. From its commit on, syncs and webhooks drop the person.
2. Every raw and quarantined Parquet file of a personal stream is rewritten without the rows of
   any erased person (`lake/scrub.py`), so an erasure interrupted here is completed by the next;
   so are local database snapshots (`local_db_snapshot`, under `CRM_DATA_DIR/snapshots`), where
   a customer row is anonymised (the snapshot's orders keep it) and the other rows dropped.
3. The person's customer 360 file is rewritten (orders kept) or removed, and the whole files the
   deleted rows fed (index, summary) are rebuilt, through the same forward-only writer as the
   change path.

`dry_run` does step 1 and rolls it back, and counts step 2 without writing: the counts are what
a real run would do.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.errors import SerializationFailure
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from crm_pipeline.atomic import write_bytes_atomic
from crm_pipeline.cache.rebuild import rebuild_customers, rebuild_file, rebuild_index
from crm_pipeline.cache.registry import stale_files
from crm_pipeline.cache.stores import Location, open_store
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline.db.privacy.erase_rows import (
    ANONYMISED_CUSTOMER_COLUMNS,
    DELETED_TABLES,
    RowCounts,
    delete_rows,
    record_erasure,
    update_counts,
)
from crm_pipeline.db.privacy.identifiers import ErasedIdentifiers, digest, erasure_key
from crm_pipeline.db.privacy.person import Person, PersonError, find_person
from crm_pipeline.lake.scrub import scrub_files, scrub_personal_files, snapshot_files
from crm_pipeline.progress import Progress

__all__ = ["ErasureResult", "PersonError", "erase_person"]

_ATTEMPTS = 5  # SERIALIZABLE: a concurrent writer of the same rows makes the erase retry
_TOUCHED = ("customers", "leads", "conversations", "messages")


@dataclass
class ErasureResult:
    """What an erasure did (or, dry run, would do): counts only, never values."""

    selector: str
    dry_run: bool
    found: bool  # any database row was about the person
    erasure_id: int | None = None
    rows: dict[str, int] = field(default_factory=dict)
    raw: dict[str, int] = field(default_factory=dict)
    cache: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Every count, flat (what the `erasures` row records)."""
        return {
            **self.rows,
            **{f"raw_{k}": v for k, v in self.raw.items()},
            **{f"cache_{k}": v for k, v in self.cache.items()},
        }


class _DryRun(Exception):
    """Rolls the dry run's transaction back."""


def _database_step(
    engine: Engine, selector: str, value: str, actor: str, key: bytes, options: dict
) -> tuple[Person, RowCounts, int | None]:
    for attempt in range(_ATTEMPTS):
        try:
            return _one_transaction(engine, selector, value, actor, key, options)
        except OperationalError as exc:
            if not isinstance(exc.orig, SerializationFailure) or attempt == _ATTEMPTS - 1:
                raise
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


def _one_transaction(engine, selector, value, actor, key, options):
    result: list = []
    try:
        serializable = engine.connect().execution_options(isolation_level="SERIALIZABLE")
        with serializable as conn, conn.begin():
            conn.execute(text("SELECT set_config('crm.actor', :a, true)"), {"a": actor})
            person = find_person(conn, selector, value, max_customers=options["max_customers"])
            counts = delete_rows(conn, person)
            counts.identifiers = _identifier_count(person, key)
            result = [person, counts, None]
            if options["dry_run"]:
                raise _DryRun
            if person.found or selector != "customer_id":
                result[2] = record_erasure(conn, person, selector, actor, counts.as_dict(), key)
    except _DryRun:
        pass
    return tuple(result)


def _identifier_count(person: Person, key: bytes) -> int:
    return sum(
        1
        for kind, values in person.identifiers().items()
        for value in values
        if digest(key, kind, value) is not None
    )


def _lake_step(
    engine: Engine, data_dir: Path, person: Person, key: bytes, dry_run: bool, progress: Progress
) -> dict[str, int]:
    with engine.connect() as conn:
        erased = ErasedIdentifiers.load(conn, key)
    if dry_run:  # the person's own digests are not recorded yet: add them for the count
        own = {
            d
            for kind, values in person.identifiers().items()
            for v in values
            if (d := digest(key, kind, v)) is not None
        }
        erased = ErasedIdentifiers(key, erased.digests | own)
    with progress.step("raw files"):
        raw = scrub_personal_files(data_dir, erased.matches, dry_run=dry_run)
    with progress.step("snapshots"):
        snapshots = scrub_files(
            snapshot_files(data_dir, ("customers", *DELETED_TABLES)),
            lambda table, row: _snapshot_row(erased, table, row),
            dry_run=dry_run,
        )
        for folder in {path.parent for path in snapshots.rewritten}:
            _note_in_manifest(folder)
    return {
        "files_rewritten": raw.files_rewritten,
        "rows_removed": raw.rows_removed,
        "snapshot_files_rewritten": snapshots.files_rewritten,
        "snapshot_rows_changed": snapshots.rows_removed + snapshots.rows_anonymised,
    }


def _snapshot_row(erased: ErasedIdentifiers, table: str, row: dict) -> dict | None:
    """A snapshot's row of an erased person: dropped, or (customers, whose orders the snapshot
    keeps) anonymised like the database row."""
    if not erased.matches(row):
        return row
    if table == "customers":
        return {**row, **dict.fromkeys(ANONYMISED_CUSTOMER_COLUMNS)}
    return None


def _note_in_manifest(folder: Path) -> None:
    """A snapshot rewritten by an erasure says so: its recorded checksums are from before."""
    path = folder / "manifest.json"
    if not path.is_file():
        return
    manifest = json.loads(path.read_text())
    manifest.setdefault("rewritten_by_erasures_at", []).append(dt.datetime.now(dt.UTC).isoformat())
    write_bytes_atomic(path, (json.dumps(manifest, indent=2) + "\n").encode())


def _cache_step(engine: Engine, cache_dir: Location, person: Person) -> dict[str, int]:
    store = open_store(cache_dir)  # one store (and S3 client) for every file below
    ids = sorted(person.customer_ids)
    with read_snapshot(engine) as conn:
        files = rebuild_customers(conn, store, ids)
        # Their lines in the customer list: only their segments (none without a customer).
        segments = rebuild_index(conn, store, ids) if ids else None
    rebuilt = [rebuild_file(engine, store, f) for f in stale_files(_TOUCHED) if not f.targeted]
    return {
        "customer_files_rewritten": len(files.written),
        "customer_files_removed": len(files.removed),
        "index_segments_rewritten": 0 if segments is None else len(segments.written),
        "files_rebuilt": sum(1 for r in rebuilt if r.outcome.written),
    }


def erase_person(
    engine: Engine,
    selector: str,
    value: str,
    *,
    actor: str,
    data_dir: Path,
    cache_dir: Location,
    key: bytes | None = None,
    dry_run: bool = False,
    allow_multiple_customers: bool = False,
    progress: Progress | None = None,
) -> ErasureResult:
    """Erase the person `selector` = `value` names from the database, raw lake and cache.

    Raises PersonError for an unusable selector or a person spanning several customers (unless
    `allow_multiple_customers`). The value itself never reaches a log, record or error.
    `progress` is told each step (database, raw files, snapshots, cache) as it starts and ends.
    """
    key = key or erasure_key()
    shown = progress or Progress("erase", unit="steps", out=None)
    shown.set_total(3 if dry_run else 4)
    options = {"dry_run": dry_run, "max_customers": 10**9 if allow_multiple_customers else 1}
    with shown.step("database"):
        person, counts, erasure = _database_step(engine, selector, value, actor, key, options)
    result = ErasureResult(selector, dry_run, person.found, erasure, counts.as_dict())
    if not person.found and selector == "customer_id":
        return result  # an unknown customer id: nothing to erase, nothing to remember
    result.raw = _lake_step(engine, Path(data_dir), person, key, dry_run, shown)
    if not dry_run:
        with shown.step("cache"):
            result.cache = _cache_step(engine, cache_dir, person)
            with engine.begin() as conn:
                update_counts(conn, erasure, result.counts())
    return result
