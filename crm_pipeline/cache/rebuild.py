"""Rebuilding cache files from one DB snapshot and publishing them forward-only.

The one way every writer (Dagster assets, the cache worker, an erasure) turns the registry's
builders into files; the API's misses publish through the same `publish`/`remove`. `cache_dir`
is any cache location (`crm_pipeline.cache.stores.Location`): a folder, `s3://bucket/prefix`
or an open `Store`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from crm_pipeline.cache.customer_files import all_customer_ids
from crm_pipeline.cache.publish import Outcome, publish, remove
from crm_pipeline.cache.registry import CUSTOMER_PROFILES, CacheFile
from crm_pipeline.cache.stores import Location, open_store
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
        raise ValueError(f"{file.asset} has one file per customer: use rebuild_customers")
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
