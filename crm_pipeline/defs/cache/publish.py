"""Building a cache file from one DB snapshot and publishing it atomically."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import Connection

from crm_pipeline.cachefile import envelope, write_json_atomic
from crm_pipeline.db.changelog import reflected_watermark
from crm_pipeline.db.engine import read_snapshot
from crm_pipeline.defs.resources import PostgresResource, StorageResource


@dataclass(frozen=True)
class Published:
    """A cache file just written: where, how big, what it holds and the watermark it reflects."""

    path: Path
    size: int
    payload: dict[str, Any]
    watermark: str
    build_seconds: float  # reading the snapshot and building the document
    write_seconds: float  # serialising and the atomic write

    def metadata(self, **extra: Any) -> dict[str, Any]:
        """Materialisation metadata common to every cache file, plus `extra`."""
        return {
            "path": dg.MetadataValue.path(str(self.path)),
            "files": 1,
            "bytes": self.size,
            "watermark": self.watermark,
            "build_seconds": round(self.build_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
            **extra,
        }


def publish_from_snapshot(
    postgres: PostgresResource,
    storage: StorageResource,
    relative_path: str,
    schema_version: int,
    build: Callable[[Connection], dict[str, Any]],
) -> Published:
    """Run `build` and read the watermark in one snapshot, then write the file atomically."""
    started = time.perf_counter()
    with read_snapshot(postgres.engine()) as conn:
        payload = build(conn)
        watermark = reflected_watermark(conn)
    built = time.perf_counter()
    path = storage.cache_path() / relative_path
    document = envelope(payload, watermark=watermark, schema_version=schema_version)
    size = write_json_atomic(path, document)
    return Published(path, size, payload, watermark, built - started, time.perf_counter() - built)
