"""Rebuilding cache files from one DB snapshot and publishing them forward-only.

The one way every writer (Dagster assets, the cache worker, an erasure, the API's customer
list) turns the registry's builders into files: whole files (`rebuild_file`), customer 360
files (`rebuild_customers`) and the customer index's segments (`rebuild_index`); the API's
misses of single files publish through the same `publish`/`remove`. `cache_dir` is any cache
location (`crm_pipeline.cache.stores.Location`): a folder, `s3://bucket/prefix` or an open
`Store`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from crm_pipeline.cache import customer_index
from crm_pipeline.cache.customer_files import all_customer_ids
from crm_pipeline.cache.customer_index import SegmentEntry
from crm_pipeline.cache.publish import Outcome, merge_document, publish, remove
from crm_pipeline.cache.registry import CUSTOMER_INDEX, CUSTOMER_PROFILES, CacheFile
from crm_pipeline.cache.stores import Location, Store, open_store
from crm_pipeline.db.changelog import reflected_watermark
from crm_pipeline.db.engine import read_snapshot


@dataclass(frozen=True)
class Rebuilt:
    """A single cache file rebuilt: what it holds and whether it was published."""

    file: CacheFile
    outcome: Outcome
    payload: dict[str, Any]
    build_seconds: float  # reading the snapshot and building the document
    write_seconds: float  # serialising and the atomic write

    @property
    def watermark(self) -> str:
        return self.outcome.watermark


def rebuild_file(
    engine: Engine,
    cache_dir: Location,
    file: CacheFile,
    build: Callable[[Connection], dict[str, Any]] | None = None,
) -> Rebuilt:
    """Build `file` (with `build`, default the registry's) and its watermark in one snapshot,
    then publish it forward-only."""
    builder = build or file.build
    if builder is None:
        raise ValueError(f"{file.asset} is targeted: use rebuild_customers or rebuild_index")
    started = time.perf_counter()
    with read_snapshot(engine) as conn:
        payload = builder(conn)
        watermark = reflected_watermark(conn)
    built = time.perf_counter()
    outcome = publish(
        open_store(cache_dir).file(file.file()),
        payload,
        watermark=watermark,
        schema_version=file.schema_version,
    )
    return Rebuilt(file, outcome, payload, built - started, time.perf_counter() - built)


@dataclass
class CustomerFiles:
    """What a rebuild of customer files did."""

    watermark: str
    written: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)  # customers that no longer exist
    superseded: list[int] = field(default_factory=list)  # a newer file was already there


def rebuild_customers(
    conn: Connection, cache_dir: Location, ids: Sequence[int], watermark: str | None = None
) -> CustomerFiles:
    """Publish the 360 files of `ids` from `conn`'s snapshot (a `read_snapshot` transaction);
    remove the files of ids that no longer exist."""
    watermark = watermark or reflected_watermark(conn)
    result = CustomerFiles(watermark)
    store = open_store(cache_dir)
    profiles = CUSTOMER_PROFILES.build_customers(conn, ids)
    for cid in sorted(set(ids)):
        path = store.file(CUSTOMER_PROFILES.file(cid))
        if cid in profiles:
            outcome = publish(
                path,
                profiles[cid],
                watermark=watermark,
                schema_version=CUSTOMER_PROFILES.schema_version,
            )
            (result.written if outcome.written else result.superseded).append(cid)
        elif remove(path, watermark=watermark):
            result.removed.append(cid)
    return result


def rebuild_all_customers(conn: Connection, cache_dir: Location) -> CustomerFiles:
    """Publish every customer's 360 file from `conn`'s snapshot (in batches), and remove the
    files of customers that no longer exist; forward-only, like every write."""
    store = open_store(cache_dir)
    result = CustomerFiles(reflected_watermark(conn))
    seen: set[int] = set()
    for ids in all_customer_ids(conn):
        batch = rebuild_customers(conn, store, ids, result.watermark)
        result.written += batch.written
        result.removed += batch.removed
        result.superseded += batch.superseded
        seen.update(ids)
    for name in store.names(CUSTOMER_PROFILES.path):
        stem = name.removesuffix(".json")
        gone = stem.isdigit() and int(stem) not in seen
        if gone and remove(
            store.file(CUSTOMER_PROFILES.file(int(stem))), watermark=result.watermark
        ):
            result.removed.append(int(stem))
    return result


@dataclass
class IndexSegments:
    """What a rebuild of customer index segments did."""

    watermark: str
    mode: str  # "targeted" (the segments of some customers) or "full" (every segment)
    written: list[int] = field(default_factory=list)  # segments
    removed: list[int] = field(default_factory=list)  # segments left without a customer
    superseded: list[int] = field(default_factory=list)  # a newer segment was already there
    customers: int = 0  # customers in the segments written
    bytes: int = 0  # bytes written: segments and the manifest
    manifest: Outcome | None = None


def rebuild_index(
    conn: Connection,
    cache_dir: Location,
    ids: Sequence[int] | None,
    watermark: str | None = None,
    *,
    segments: Sequence[int] | None = None,
) -> IndexSegments:
    """Publish the index segments holding `ids` (or the `segments` given; neither: every
    segment) from `conn`'s snapshot (a `read_snapshot` transaction), remove segments left
    without a customer, then merge what was done into the manifest.

    Without a usable manifest (none yet, or one of another layout) every segment is rebuilt: a
    manifest naming only some segments would hide the others from readers.
    """
    store = open_store(cache_dir)
    watermark = watermark or reflected_watermark(conn)
    schema = CUSTOMER_INDEX.schema_version
    current = _read_manifest(store)
    targets = sorted(set(segments)) if segments is not None else None
    if targets is None and ids is not None:
        targets = customer_index.segments_of(ids)
    full = targets is None or not customer_index.usable_manifest(current, schema)
    result = IndexSegments(watermark, "full" if full else "targeted")
    if full:
        wanted = customer_index.segments_in_use(conn)
        leftovers = _published_segments(store, current) - set(wanted)
    else:
        wanted, leftovers = targets, set()
    entries: list[SegmentEntry] = []
    for batch in customer_index.batches(wanted):
        payloads = CUSTOMER_INDEX.build_segments(conn, batch)
        for segment in batch:
            entry = _publish_segment(store, segment, payloads.get(segment), result)
            entries += [entry] if entry else []
    for segment in sorted(leftovers):
        entries.append(_publish_segment(store, segment, None, result))
    generated_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result.manifest = merge_document(
        store.file(customer_index.MANIFEST_FILE),
        lambda published: customer_index.merge_manifest(
            published,
            entries,
            watermark=watermark,
            schema_version=schema,
            generated_at=generated_at,
            full=full,
        ),
    )
    result.bytes += result.manifest.size
    return result


def _publish_segment(
    store: Store, segment: int, payload: dict[str, Any] | None, result: IndexSegments
) -> SegmentEntry | None:
    """Publish (or, without customers, remove) one segment; its manifest entry, or None when
    a newer segment was already there (its writer's entry stands)."""
    where = store.file(customer_index.segment_file(segment))
    watermark = int(result.watermark)
    if payload is None:
        if remove(where, watermark=result.watermark):
            result.removed.append(segment)
        # Listed with count 0 either way: an older writer's entry cannot bring it back.
        return SegmentEntry(segment, watermark, 0, 0)
    outcome = publish(
        where, payload, watermark=result.watermark, schema_version=CUSTOMER_INDEX.schema_version
    )
    if not outcome.written:
        result.superseded.append(segment)
        return None
    result.written.append(segment)
    result.customers += payload["count"]
    result.bytes += outcome.size
    return SegmentEntry(segment, watermark, payload["count"], outcome.size)


def _read_manifest(store: Store) -> dict[str, Any] | None:
    try:
        return store.read_document(customer_index.MANIFEST_FILE)
    except ValueError:  # not JSON: rebuilt from scratch
        return None


def _published_segments(store: Store, manifest: dict[str, Any] | None) -> set[int]:
    """Segments that may have a file: listed with customers, or found in the folder."""
    listed = {e.segment for e in customer_index.manifest_entries(manifest).values() if e.count > 0}
    names = store.names(customer_index.INDEX_DIR)
    found = {int(n[:-5]) for n in names if n[:-5].isdigit()}
    return listed | found
