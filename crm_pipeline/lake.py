"""The raw landing zone under `CRM_DATA_DIR`: one Parquet file per stream and partition."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def raw_path(data_dir: Path, stream: str, partition: str) -> Path:
    """Where a raw partition lands, Hive-style: `raw/<stream>/date=<partition>/data.parquet`."""
    return Path(data_dir) / "raw" / stream / f"date={partition}" / "data.parquet"


def write_parquet_atomic(table: pa.Table, path: Path) -> Path:
    """Write `table` to `path` so readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_parquet(path: Path) -> pa.Table:
    """Read a raw partition; a clear error when it was never landed."""
    if not path.exists():
        raise FileNotFoundError(
            f"raw partition {path} does not exist: "
            "materialise its raw asset for this partition first"
        )
    return pq.read_table(path)


def quarantine_path(data_dir: Path, stream: str, partition: str) -> Path:
    """Where malformed rows of one raw partition are kept for inspection."""
    return Path(data_dir) / "quarantine" / stream / partition / "rows.parquet"


def write_quarantine(data_dir: Path, stream: str, partition: str, bad: list[dict]) -> Path | None:
    """Keep malformed rows (reason + the record as JSON); remove a stale file when none."""
    import orjson

    path = quarantine_path(data_dir, stream, partition)
    if not bad:
        path.unlink(missing_ok=True)
        return None
    table = pa.table(
        {
            "reason": [b["reason"] for b in bad],
            "record": [orjson.dumps(b["record"], default=str).decode() for b in bad],
        }
    )
    return write_parquet_atomic(table, path)
