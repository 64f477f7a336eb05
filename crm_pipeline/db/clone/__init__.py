"""Full database clone: one consistent snapshot of the source copied to PostgreSQL or Parquet.

- **Consistent**: every table is read inside one REPEATABLE READ, READ ONLY transaction on the
  source, one table after another, so writes committed during the clone are all in it or all
  out of it (`source.py`). (Tables are copied sequentially; a parallel copy would export this
  snapshot with `pg_export_snapshot()` and `SET TRANSACTION SNAPSHOT` it in each worker.)
- **Streaming**: PostgreSQL targets get `COPY ... TO STDOUT` piped into `COPY ... FROM STDIN`
  (`to_postgres.py`); Parquet targets are written batch by batch, one file per table
  (`to_parquet.py`). Memory stays bounded by one batch.
- **Atomic**: a PostgreSQL target gets our migrations and all rows in ONE transaction, verified
  before it commits (any failure rolls everything back). A directory target is written to a
  temporary directory next to it and renamed into place only after verification.
- **Verified**: per table, `count(*)` and an order-independent checksum
  (`sum(hashtext(row::text))`) computed in SQL on the source (in the snapshot) and on the
  target. For Parquet, the files are read back into a temporary table of the same type so the
  checksum is computed from what was actually written.
- **`mask_pii`**: everything personal becomes keyed hashes, computed in the source query so
  the checksums verify the masked copy: names, emails, phones, PSIDs, message texts, every
  `field_data` answer and every string and number of webhook payloads (`masking.PII_COLUMNS`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from sqlalchemy.engine import make_url

from crm_pipeline.config import normalize_database_url
from crm_pipeline.db.clone.masking import mask_key, mask_value
from crm_pipeline.db.clone.report import CloneError, CloneResult, TableReport
from crm_pipeline.db.clone.source import clone_tables
from crm_pipeline.db.clone.to_parquet import clone_to_parquet
from crm_pipeline.db.clone.to_postgres import clone_to_postgres
from crm_pipeline.progress import Progress

__all__ = ["CloneError", "CloneResult", "TableReport", "clone_database", "mask_key", "mask_value"]


def _is_database_url(target: str) -> bool:
    return target.startswith(("postgresql:", "postgresql+", "postgres:"))


def clone_database(
    source_url: str,
    target: str | Path,
    *,
    mask_pii: bool = False,
    key: bytes | None = None,
    progress: TextIO | None = sys.stderr,
    on_table_done: Callable[[TableReport], None] | None = None,
) -> CloneResult:
    """Clone the database at `source_url` to `target` (a PostgreSQL URL or a directory).

    Raises CloneError when the target is not empty or the clone does not verify; in both cases
    the target is left as it was. `on_table_done` is called after each table is copied (tests
    use it to inject a failure midway). Progress (tables done, the current table's rows and
    rows/s) goes to `progress`: a bar when it is a terminal, plain lines otherwise, nothing
    when it is None.
    """
    source_url = normalize_database_url(source_url)
    use_key = (key or mask_key()) if mask_pii else None
    database = isinstance(target, str) and _is_database_url(target)
    target_url = normalize_database_url(str(target), "--to") if database else ""
    if database and make_url(target_url) == make_url(source_url):
        raise CloneError("the clone target is the source database itself")
    with Progress("clone", unit="tables", total=len(clone_tables()), out=progress) as shown:
        if database:
            return clone_to_postgres(source_url, target_url, use_key, shown, on_table_done)
        return clone_to_parquet(source_url, Path(target), use_key, shown, on_table_done)
