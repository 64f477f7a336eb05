"""Bulk upsert: `COPY` into a temporary staging table, then one `INSERT … ON CONFLICT`.

COPY is the fastest way into PostgreSQL; the single set-based INSERT makes the load idempotent
on the table's natural key. Rows whose values did not change are not rewritten, so re-running a
sync neither bloats the table nor fires change-log triggers.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql
from sqlalchemy import Connection, Table

_BATCH_ROWS = 50_000
_stage_names = itertools.count()


@dataclass(frozen=True)
class UpsertResult:
    """What one upsert did: rows staged, inserted and updated (the rest were unchanged)."""

    staged: int
    inserted: int
    updated: int
    seconds: float = 0.0  # wall time of the whole upsert (stage, COPY, INSERT ... ON CONFLICT)

    @property
    def unchanged(self) -> int:
        """Rows that matched an existing row exactly (duplicates in the input count here too)."""
        return self.staged - self.inserted - self.updated


def _as_arrow(rows: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    return pa.Table.from_pylist(list(rows))


def _csv_chunks(data: pa.Table) -> Iterable[bytes]:
    # Arrow writes nulls as unquoted empty fields and quotes every string, which is exactly
    # PostgreSQL's CSV convention for NULL vs ''.
    options = pacsv.WriteOptions(include_header=False)
    for batch in data.to_batches(max_chunksize=_BATCH_ROWS):
        buffer = io.BytesIO()
        pacsv.write_csv(pa.Table.from_batches([batch]), buffer, write_options=options)
        yield buffer.getvalue()


def bulk_upsert(
    conn: Connection,
    table: Table,
    rows: pa.Table | Iterable[Mapping[str, Any]],
    *,
    key: Sequence[str] | None = None,
) -> UpsertResult:
    """Upsert `rows` into `table` on `key` (default: its primary key) inside `conn`'s transaction.

    `rows` is an Arrow table or an iterable of dicts whose keys are column names of `table`;
    values may be strings that PostgreSQL casts (Meta sends numbers as strings). When the input
    holds a key twice, the last occurrence wins.
    """
    started = time.perf_counter()
    data = _as_arrow(rows)
    if data.num_rows == 0:
        return UpsertResult(0, 0, 0)
    ((_, inserted, updated),) = _upsert(conn, table, data, key, None) or [(None, 0, 0)]
    return UpsertResult(
        staged=data.num_rows,
        inserted=inserted,
        updated=updated,
        seconds=time.perf_counter() - started,
    )


def bulk_upsert_by(
    conn: Connection, table: Table, rows: pa.Table, group: str
) -> dict[str, UpsertResult]:
    """:func:`bulk_upsert` of many groups at once (e.g. an account's month of days, `group`
    "date"), with each group's counts, keyed on the group column's value as text: one
    staging table, one COPY and one statement instead of one of each per group."""
    started = time.perf_counter()
    if rows.num_rows == 0:
        return {}
    staged = {
        str(entry["values"]): entry["counts"] for entry in pc.value_counts(rows[group]).to_pylist()
    }
    counts = {
        str(value): (inserted, updated)
        for value, inserted, updated in _upsert(conn, table, rows, None, group)
    }
    seconds = time.perf_counter() - started
    return {
        value: UpsertResult(n, *counts.get(value, (0, 0)), seconds=seconds)
        for value, n in staged.items()
    }


def _upsert(
    conn: Connection,
    table: Table,
    data: pa.Table,
    key: Sequence[str] | None,
    group: str | None,
) -> list[tuple[Any, int, int]]:
    """Stage `data`, merge it; `(group value or None, inserted, updated)` rows."""
    key = list(key or [c.name for c in table.primary_key.columns])
    columns = list(data.column_names)
    _check_columns(table, columns, key)
    stage = sql.Identifier(f"_stage_{table.name}_{next(_stage_names)}")
    target = sql.Identifier(table.name)
    raw = conn.connection.driver_connection  # psycopg 3 connection, same transaction
    with raw.cursor() as cur:
        _copy_to_stage(cur, stage, target, columns, data)
        cur.execute(_merge_statement(stage, target, columns, key, group))
        counted = cur.fetchall()
        cur.execute(sql.SQL("DROP TABLE {stage}").format(stage=stage))
    return [tuple(row) for row in counted]


def _check_columns(table: Table, columns: list[str], key: list[str]) -> None:
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {', '.join(sorted(unknown))}")
    missing_key = [c for c in key if c not in columns]
    if missing_key:
        raise ValueError(f"upsert into {table.name} needs key column(s) {', '.join(missing_key)}")


def _copy_to_stage(
    cur: psycopg.Cursor,
    stage: sql.Identifier,
    target: sql.Identifier,
    columns: list[str],
    data: pa.Table,
) -> None:
    """A temporary table shaped like `columns` of `target`, filled by COPY."""
    cols = _column_list(columns)
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {target} WITH NO DATA"
        ).format(stage=stage, cols=cols, target=target)
    )
    copy_sql = sql.SQL("COPY {stage} ({cols}) FROM STDIN WITH (FORMAT csv)")
    with cur.copy(copy_sql.format(stage=stage, cols=cols)) as copy:
        for chunk in _csv_chunks(data):
            copy.write(chunk)


def _merge_statement(
    stage: sql.Identifier,
    target: sql.Identifier,
    columns: list[str],
    key: list[str],
    group: str | None = None,
) -> sql.Composed:
    """One INSERT ... ON CONFLICT from the stage; it returns (group, inserted, updated) counts,
    one row per value of the `group` column (as text), or one row with a NULL group."""
    cols, keys = _column_list(columns), _column_list(key)
    grouped = sql.SQL("{g}::text").format(g=sql.Identifier(group)) if group else sql.NULL
    # DISTINCT ON keeps one row per key (ctid DESC: the last one copied), because
    # ON CONFLICT cannot touch the same target row twice in one statement.
    return sql.SQL(
        "WITH up AS ("
        " INSERT INTO {target} ({cols})"
        " SELECT DISTINCT ON ({keys}) {cols} FROM {stage} ORDER BY {keys}, ctid DESC"
        " ON CONFLICT ({keys}) {on_conflict}"
        " RETURNING (xmax = 0) AS inserted, {grouped} AS grp"
        ") SELECT grp, count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
        " FROM up GROUP BY grp"
    ).format(
        target=target,
        cols=cols,
        keys=keys,
        stage=stage,
        grouped=grouped,
        on_conflict=_on_conflict(target, [c for c in columns if c not in key]),
    )


def _on_conflict(target: sql.Identifier, updatable: list[str]) -> sql.Composable:
    """Update the non-key columns, only where a value changed (unchanged rows stay as they are:
    no new row version, no change-log row)."""
    if not updatable:
        return sql.SQL("DO NOTHING")
    assignments = sql.SQL(", ").join(
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updatable
    )
    changed = sql.SQL("({old}) IS DISTINCT FROM ({new})").format(
        old=sql.SQL(", ").join(
            sql.SQL("{t}.{c}").format(t=target, c=sql.Identifier(c)) for c in updatable
        ),
        new=sql.SQL(", ").join(
            sql.SQL("EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updatable
        ),
    )
    return sql.SQL("DO UPDATE SET {a} WHERE {w}").format(a=assignments, w=changed)


def _column_list(names: Sequence[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Identifier, names))
