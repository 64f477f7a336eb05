"""`local_db_snapshot`: a consistent Parquet snapshot of the whole database, for analysts.

One file per table under `CRM_DATA_DIR/snapshots/<UTC timestamp>/`, written by the same code as
`crm-pipeline clone-db --to DIR` (one REPEATABLE READ snapshot, verified row counts and
checksums, the folder appears only when complete).
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from crm_pipeline.db.clone import clone_database
from crm_pipeline.defs import groups
from crm_pipeline.defs.resources import PostgresResource, StorageResource


class SnapshotConfig(dg.Config):
    """Run config of `local_db_snapshot`."""

    mask_pii: bool = Field(
        default=False,
        description=(
            "Replace every personal value (names, emails, phones, PSIDs, message text, lead "
            "answers, webhook payloads) with keyed hashes (key: CRM_MASK_KEY)."
        ),
    )


@dg.asset(
    group_name=groups.CRM,
    kinds={"parquet"},
    owners=["team:data-engineering"],
    description=(
        "A consistent snapshot of every source-of-truth table as Parquet (one file per table) "
        "under CRM_DATA_DIR/snapshots/<timestamp>/, verified by row counts and checksums."
    ),
)
def local_db_snapshot(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    postgres: PostgresResource,
    storage: StorageResource,
) -> dg.MaterializeResult:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = storage.data_path() / "snapshots" / stamp
    result = clone_database(postgres.url(), target, mask_pii=config.mask_pii, progress=None)
    for t in result.tables:
        context.log.info(f"{t.table}: {t.rows} rows, checksum {t.target_checksum}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(target)),
            "tables": len(result.tables),
            "rows": result.rows,
            "masked": result.masked,
            "seconds": round(result.seconds, 3),
            "snapshot_at": result.snapshot_at,
            "source": postgres.display_url(),
            "checksums": dg.MetadataValue.json(
                {t.table: {"rows": t.rows, "checksum": t.target_checksum} for t in result.tables}
            ),
        }
    )
