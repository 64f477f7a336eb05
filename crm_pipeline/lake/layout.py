"""Where raw data lives under `CRM_DATA_DIR/raw`: Hive-style paths, computed without any I/O.

- a partitioned stream: `raw/<stream>/account=<id>/date=<day>/part-0.parquet`;
- a stream landed whole at each sync: `raw/<stream>/synced_at=<UTC stamp>/part-0.parquet`.

`pyarrow.dataset` (`partitioning="hive"`) and DuckDB (`hive_partitioning=true`) discover the
`key=value` directories as columns, so a file must have no column of the same name. See
docs/architecture.md for the landing zone as a whole.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

RAW = "raw"
# One file per partition under a fixed name: re-landing renames over it, so a reader of the
# directory sees the old file or the new one, never both (no duplicate rows).
PART_FILE = "part-0.parquet"
SYNC_KEY = "synced_at"
# The streams that hold personal data (Lead Ads answers, Messenger threads and messages): what
# an erasure rewrites. The insights and ad objects hold none.
PERSONAL_STREAMS = ("leads", "conversations", "messages")
QUARANTINE = "quarantine"
# ISO 8601 basic format, fixed width: sorts chronologically as text, and has no ':' (which
# some tools refuse in paths).
_SYNC_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_SEGMENT = re.compile(r"([a-z][a-z0-9_]*)=([A-Za-z0-9_.+-]+)")


def stream_dir(data_dir: Path, stream: str) -> Path:
    """The directory holding every partition of `stream`."""
    return Path(data_dir) / RAW / stream


def partition_keys(partition: str) -> dict[str, str]:
    """The keys and values of a Hive partition such as `account=act_1/date=2026-01-02`.

    Raises ValueError for anything else, so a partition can never nest inside another key.
    """
    keys: dict[str, str] = {}
    for segment in partition.split("/"):
        match = _SEGMENT.fullmatch(segment)
        if match is None or match[1] in keys:
            raise ValueError(f"not a Hive partition (key=value/...): {partition!r}")
        keys[match[1]] = match[2]
    return keys


def raw_path(data_dir: Path, stream: str, partition: str) -> Path:
    """The file of one raw partition: `raw/<stream>/<partition>/part-0.parquet`."""
    partition_keys(partition)
    return stream_dir(data_dir, stream) / partition / PART_FILE


def sync_partition(synced_at: dt.datetime) -> str:
    """The partition of a sync landed at `synced_at` (an aware datetime)."""
    return f"{SYNC_KEY}={synced_at.astimezone(dt.UTC).strftime(_SYNC_FORMAT)}"


def sync_time(segment: str) -> dt.datetime | None:
    """When the sync of a `synced_at=<stamp>` path segment landed; None for any other segment."""
    key, _, stamp = segment.partition("=")
    if key != SYNC_KEY:
        return None
    try:
        return dt.datetime.strptime(stamp, _SYNC_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
