"""A clone into a directory of Parquet files, one per table, published only when verified.

Each table is read through a server-side cursor in batches written with a pyarrow
`ParquetWriter`, so memory stays bounded by one batch. The files go to a temporary directory
next to the target, are read back into temporary tables of the source's column types to
checksum what was actually written, and the directory is renamed into place by
`crm_pipeline.atomic.replace_dir` only after that.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql
from sqlalchemy import BigInteger, Date, DateTime, Integer, Numeric, Table
from sqlalchemy.dialects.postgresql import JSONB

from crm_pipeline import atomic
from crm_pipeline.db.clone.report import (
    CloneError,
    CloneResult,
    TableReport,
    finish,
)
from crm_pipeline.db.clone.source import checksum_sql, clone_tables, select_sql, source_snapshot
from crm_pipeline.db.engine import libpq_url
from crm_pipeline.db.schema import Xid8
from crm_pipeline.progress import Progress

BATCH_ROWS = 20_000


def arrow_type(column) -> pa.DataType:
    """The Arrow type a column is written as (JSONB and xid8 as their text form)."""
    ctype = column.type
    if isinstance(ctype, BigInteger):
        return pa.int64()
    if isinstance(ctype, Integer):
        return pa.int32()
    if isinstance(ctype, DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(ctype, Date):
        return pa.date32()
    if isinstance(ctype, Numeric):
        if _unconstrained(ctype):
            return pa.string()  # any fixed Arrow scale could round it: kept exact, as text
        return pa.decimal128(ctype.precision or 38, ctype.scale or 0)
    return pa.string()


def _unconstrained(ctype) -> bool:
    """A bare `numeric` (no scale, e.g. ad_insights_daily.frequency): any number of decimals."""
    return isinstance(ctype, Numeric) and ctype.scale is None


def arrow_schema(table: Table) -> pa.Schema:
    """The Parquet schema of one cloned table."""
    return pa.schema([pa.field(c.name, arrow_type(c), nullable=c.nullable) for c in table.columns])


def _text_cast(table: Table) -> list[bool]:
    return [isinstance(c.type, JSONB | Xid8) or _unconstrained(c.type) for c in table.columns]


def clone_to_parquet(
    source_url: str,
    target: Path,
    key: bytes | None,
    progress: Progress,
    on_table_done: Callable[[TableReport], None] | None,
) -> CloneResult:
    """Clone into the new or empty directory `target`; see the module docstring."""
    started = time.monotonic()
    target = target.expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CloneError(f"refusing to clone into {target}: it exists and is not an empty folder")
    result = CloneResult(target=str(target), kind="parquet", masked=key is not None)
    tmp = atomic.temp_dir_beside(target)
    try:
        with source_snapshot(source_url) as sconn:
            result.snapshot_at = str(sconn.execute("SELECT now()").fetchone()[0])
            for table in clone_tables():
                with progress.step(table.name):
                    report = _copy_table(sconn, table, tmp, key, progress)
                    report.source_count, report.source_checksum = sconn.execute(
                        checksum_sql(select_sql(table, key))
                    ).fetchone()
                result.tables.append(report)
                if on_table_done is not None:
                    on_table_done(report)
        verify_parquet(source_url, tmp, result)
        finish(result, started)
        _write_manifest(tmp, result)
        atomic.replace_dir(tmp, target)  # an empty existing target folder is replaced too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _write_manifest(folder: Path, result: CloneResult) -> None:
    manifest = {
        "snapshot_at": result.snapshot_at,
        "masked": result.masked,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "tables": [asdict(t) for t in result.tables],
    }
    atomic.write_bytes_atomic(
        folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode()
    )


def _copy_table(
    sconn: psycopg.Connection,
    table: Table,
    folder: Path,
    key: bytes | None,
    progress: Progress,
) -> TableReport:
    started = time.monotonic()
    schema = arrow_schema(table)
    as_text = _text_cast(table)
    cols = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c.name)) if t else sql.Identifier(c.name)
        for c, t in zip(table.columns, as_text, strict=True)
    )
    query = sql.SQL("SELECT {cols} FROM ({src}) AS s").format(cols=cols, src=select_sql(table, key))
    rows = 0
    path = folder / f"{table.name}.parquet"
    with (
        sconn.cursor(name=f"clone_{table.name}") as cur,
        pq.ParquetWriter(path, schema, compression="zstd") as writer,
    ):
        cur.itersize = BATCH_ROWS
        cur.execute(query)
        while batch := cur.fetchmany(BATCH_ROWS):
            arrays = [pa.array([r[i] for r in batch], type=f.type) for i, f in enumerate(schema)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            rows += len(batch)
            progress.item_rows(rows)
        if rows == 0:
            writer.write_table(schema.empty_table())
    atomic.fsync_file(path)
    seconds = time.monotonic() - started
    progress.item_rows(rows)
    return TableReport(table=table.name, rows=rows, seconds=seconds)


def verify_parquet(source_url: str, folder: Path, result: CloneResult) -> None:
    """Read each file back into a temp table of the source's column types; checksum it there."""
    options = pacsv.WriteOptions(include_header=False)
    with psycopg.connect(libpq_url(source_url)) as conn:  # one transaction, rolled back at the end
        conn.execute("SET TIME ZONE 'UTC'")
        for table, report in zip(clone_tables(), result.tables, strict=True):
            tmp = sql.Identifier(f"_clone_verify_{table.name}")
            conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE {tmp} ON COMMIT DROP AS SELECT * FROM {t} WITH NO DATA"
                ).format(tmp=tmp, t=sql.Identifier(table.name))
            )
            cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
            parquet = pq.ParquetFile(folder / f"{table.name}.parquet")
            with conn.cursor().copy(
                sql.SQL("COPY {tmp} ({c}) FROM STDIN WITH (FORMAT csv)").format(tmp=tmp, c=cols)
            ) as copy:
                for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                    buffer = pa.BufferOutputStream()
                    pacsv.write_csv(pa.Table.from_batches([batch]), buffer, write_options=options)
                    copy.write(buffer.getvalue().to_pybytes())
            # The columns in the order the source's checksum read them: a table's physical
            # order (which `SELECT *` follows) differs where a migration added a column.
            report.target_count, report.target_checksum = conn.execute(
                checksum_sql(sql.SQL("SELECT {c} FROM {tmp}").format(c=cols, tmp=tmp))
            ).fetchone()
        conn.rollback()
