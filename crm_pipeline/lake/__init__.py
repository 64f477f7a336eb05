"""The raw landing zone under `CRM_DATA_DIR`: what the Graph API returned, as Hive-style Parquet.

`layout` says where files live, `raw` lands and reads them (atomically, through
`crm_pipeline.atomic`), `legacy` moves files of the old layout, `quarantine` keeps malformed
rows, `retention` removes landings past `CRM_RAW_RETENTION_DAYS`. See docs/architecture.md.
"""

from crm_pipeline.lake.layout import PART_FILE, SYNC_KEY, partition_keys, raw_path, stream_dir
from crm_pipeline.lake.legacy import migrate_legacy_layout
from crm_pipeline.lake.quarantine import quarantine_path, write_quarantine
from crm_pipeline.lake.raw import (
    SYNCS_KEPT,
    land_partition,
    land_sync,
    newest_sync,
    read_newest_sync,
    read_parquet,
    read_partition,
    write_parquet_atomic,
)
from crm_pipeline.lake.retention import PruneReport, prune_raw

__all__ = [
    "PART_FILE",
    "PruneReport",
    "SYNCS_KEPT",
    "SYNC_KEY",
    "land_partition",
    "land_sync",
    "migrate_legacy_layout",
    "newest_sync",
    "partition_keys",
    "prune_raw",
    "quarantine_path",
    "raw_path",
    "read_newest_sync",
    "read_parquet",
    "read_partition",
    "stream_dir",
    "write_parquet_atomic",
    "write_quarantine",
]
