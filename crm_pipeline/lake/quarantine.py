"""Malformed rows of a raw partition, kept for inspection under `CRM_DATA_DIR/quarantine`."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa

from crm_pipeline.lake.raw import write_parquet_atomic


def quarantine_path(data_dir: Path, stream: str, partition: str) -> Path:
    """Where malformed rows of one raw partition are kept for inspection."""
    return Path(data_dir) / "quarantine" / stream / partition / "rows.parquet"


def write_quarantine(data_dir: Path, stream: str, partition: str, bad: list[dict]) -> Path | None:
    """Keep malformed rows (reason + the record as JSON); remove a stale file when none."""
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
