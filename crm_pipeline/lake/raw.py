"""Landing and reading raw Parquet: partitions replaced atomically, syncs kept by time.

Every public function first moves files of the old layout into the current one
(`legacy.migrate_legacy_layout`, once per data dir and process), so the first touch of the raw
zone after an upgrade leaves it in one layout. See docs/architecture.md.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipeline.atomic import replacing
from crm_pipeline.lake.layout import (
    PART_FILE,
    SYNC_KEY,
    partition_keys,
    raw_path,
    stream_dir,
    sync_partition,
)
from crm_pipeline.lake.legacy import migrate_legacy_layout_once

# Syncs of a stream kept on disk: the loader reads only the newest, the others are there to
# look at after a bad load (a day of hourly syncs), without the zone growing for ever.
SYNCS_KEPT = 24


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write `table` to `path` so readers see the old file or the new one, never half of one."""
    with replacing(path) as fh:
        pq.write_table(table, fh, compression="zstd")
    return path


def read_parquet(path: Path) -> pa.Table:
    """Read a raw file; a clear error when it was never landed."""
    if not path.exists():
        raise FileNotFoundError(
            f"raw partition {path} does not exist (never landed, or removed by the raw "
            "retention, CRM_RAW_RETENTION_DAYS): materialise its raw asset for this partition first"
        )
    # One known file: read it directly (read_table would set up a dataset, discovery and all,
    # for every one of a range's hundreds of files).
    with pq.ParquetFile(path) as file:
        return file.read()


def _check_columns(table: pa.Table, partition: str) -> None:
    # A data column named like a partition key would clash with the discovered column.
    clash = set(partition_keys(partition)) & set(table.column_names)
    if clash:
        raise ValueError(f"columns {sorted(clash)} clash with the partition keys of {partition}")


def land_partition(data_dir: Path, stream: str, partition: str, table: pa.Table) -> Path:
    """Land `table` as the Hive `partition` (e.g. `account=act_1/date=2026-01-02`) of `stream`,
    replacing what was there atomically; return the file's path."""
    _check_columns(table, partition)
    migrate_legacy_layout_once(data_dir)
    return write_parquet_atomic(table, raw_path(data_dir, stream, partition))


def read_partition(data_dir: Path, stream: str, partition: str) -> pa.Table:
    """The rows of one landed partition of `stream`."""
    migrate_legacy_layout_once(data_dir)
    return read_parquet(raw_path(data_dir, stream, partition))


def land_sync(
    data_dir: Path, stream: str, table: pa.Table, synced_at: dt.datetime | None = None
) -> Path:
    """Land one sync of `stream` (all its rows, by default timestamped now); return the file.

    Syncs beyond the newest `SYNCS_KEPT` are removed.
    """
    partition = sync_partition(synced_at or dt.datetime.now(dt.UTC))
    _check_columns(table, partition)
    migrate_legacy_layout_once(data_dir)
    path = write_parquet_atomic(table, raw_path(data_dir, stream, partition))
    for old in _syncs(data_dir, stream)[:-SYNCS_KEPT]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _syncs(data_dir: Path, stream: str) -> list[Path]:
    """The complete syncs of `stream`, oldest first (a directory still being written has no
    part file yet and is skipped)."""
    found = stream_dir(data_dir, stream).glob(f"{SYNC_KEY}=*/{PART_FILE}")
    return sorted(path.parent for path in found)


def newest_sync(data_dir: Path, stream: str) -> Path | None:
    """The file of the newest sync of `stream`; None when none has landed."""
    migrate_legacy_layout_once(data_dir)
    syncs = _syncs(data_dir, stream)
    return syncs[-1] / PART_FILE if syncs else None


def read_newest_sync(data_dir: Path, stream: str) -> pa.Table:
    """The rows of the newest sync of `stream`.

    Raises FileNotFoundError when there is none on disk: never landed, or every sync is older
    than the raw retention (`lake.retention`). The loads then fail, loading nothing and moving
    no watermark, until the raw asset lands a new sync; an older sync is never read in the
    newest's place (the retention removes a stream's syncs oldest first).
    """
    path = newest_sync(data_dir, stream)
    if path is not None:
        try:
            return pq.read_table(path)
        except FileNotFoundError:
            pass  # pruned since it was listed, and every older sync before it
    raise FileNotFoundError(
        f"no sync of raw stream {stream} on disk: none landed yet, or the raw retention "
        f"(CRM_RAW_RETENTION_DAYS) removed them all; materialise its raw asset first"
    )
