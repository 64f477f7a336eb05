"""A clone into PostgreSQL: our migrations and every row in ONE transaction, verified before
it commits, so any failure leaves the target as it was.

Rows stream as `COPY (SELECT ...) TO STDOUT` from the source piped chunk by chunk into
`COPY ... FROM STDIN` on the target: memory stays bounded by one chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from psycopg import sql
from sqlalchemy import Table, create_engine
from sqlalchemy.pool import NullPool

from crm_pipeline.config import redact_url
from crm_pipeline.db.clone.report import (
    PROGRESS_EVERY,
    CloneError,
    CloneResult,
    TableReport,
    finish,
)
from crm_pipeline.db.clone.source import (
    checksum_sql,
    clone_tables,
    select_sql,
    source_snapshot,
    stored_columns,
)
from crm_pipeline.progress import Progress


def user_tables(conn: psycopg.Connection) -> list[str]:
    """Every table of the database outside the system schemas, as `schema.table`."""
    rows = conn.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables"
        " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        " AND table_schema NOT LIKE 'pg_toast%' AND table_schema NOT LIKE 'pg_temp%'"
    ).fetchall()
    return [r[0] for r in rows]


def _refuse_non_empty(tconn: psycopg.Connection, target_url: str) -> None:
    existing = user_tables(tconn)
    if existing:
        shown = ", ".join(sorted(existing)[:5])
        raise CloneError(
            f"refusing to clone into {redact_url(target_url)}: it is not empty "
            f"({len(existing)} table(s), e.g. {shown}); give a new, empty database"
        )


def clone_to_postgres(
    source_url: str,
    target_url: str,
    key: bytes | None,
    progress: Progress,
    on_table_done: Callable[[TableReport], None] | None,
) -> CloneResult:
    """Clone into the empty database at `target_url`; see the module docstring."""
    from alembic import command

    from crm_pipeline.db.migrate import alembic_config

    started = time.monotonic()
    result = CloneResult(target=redact_url(target_url), kind="postgres", masked=key is not None)
    engine = create_engine(target_url, poolclass=NullPool, hide_parameters=True)
    try:
        with engine.connect() as sa_conn:
            tconn: psycopg.Connection = sa_conn.connection.driver_connection
            with sa_conn.begin():  # ONE transaction: schema + rows + verification
                _refuse_non_empty(tconn, target_url)
                cfg = alembic_config()
                cfg.attributes["connection"] = sa_conn
                command.upgrade(cfg, "head")
                tconn.execute("SET LOCAL TIME ZONE 'UTC'")
                # The target's change-log (and FK) triggers must not fire while loading: the
                # change_log table itself is copied as it is in the source.
                tconn.execute("SET LOCAL session_replication_role = replica")
                _copy_tables(source_url, tconn, key, progress, on_table_done, result)
                tconn.execute("SET LOCAL session_replication_role = origin")
                for table, report in zip(clone_tables(), result.tables, strict=True):
                    report.target_count, report.target_checksum = tconn.execute(
                        checksum_sql(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table.name)))
                    ).fetchone()
                _advance_identities(tconn)
                finish(result, started)  # raises (and so rolls back) on a mismatch
    finally:
        engine.dispose()
    return result


def _copy_tables(
    source_url: str,
    tconn: psycopg.Connection,
    key: bytes | None,
    progress: Progress,
    on_table_done: Callable[[TableReport], None] | None,
    result: CloneResult,
) -> None:
    """Copy every table from one source snapshot, then checksum them in that same snapshot."""
    with source_snapshot(source_url) as sconn:
        result.snapshot_at = str(sconn.execute("SELECT now()").fetchone()[0])
        for table in clone_tables():
            with progress.step(table.name):
                report = _copy_table(sconn, tconn, table, key, progress)
            result.tables.append(report)
            if on_table_done is not None:
                on_table_done(report)
        for table, report in zip(clone_tables(), result.tables, strict=True):
            report.source_count, report.source_checksum = sconn.execute(
                checksum_sql(select_sql(table, key))
            ).fetchone()


def _copy_table(
    sconn: psycopg.Connection,
    tconn: psycopg.Connection,
    table: Table,
    key: bytes | None,
    progress: Progress,
) -> TableReport:
    started = time.monotonic()
    # Generated columns are recomputed by the target, not copied.
    writable = stored_columns(table, computed=False)
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in writable)
    rows = 0
    next_report = PROGRESS_EVERY
    with (
        sconn.cursor().copy(
            sql.SQL("COPY ({q}) TO STDOUT").format(q=select_sql(table, key, computed=False))
        ) as source,
        tconn.cursor().copy(
            sql.SQL("COPY {t} ({c}) FROM STDIN").format(t=sql.Identifier(table.name), c=cols)
        ) as into,
    ):
        for chunk in source:
            into.write(chunk)
            rows += bytes(chunk).count(b"\n")  # text format escapes newlines inside values
            if rows >= next_report:
                progress.item_rows(rows)
                next_report = rows + PROGRESS_EVERY
    seconds = time.monotonic() - started
    progress.item_rows(rows)
    return TableReport(table=table.name, rows=rows, seconds=seconds)


def _advance_identities(tconn: psycopg.Connection) -> None:
    """Move every identity sequence past the copied ids so inserts after the clone work."""
    for table in clone_tables():
        for col in table.columns:
            if col.identity is None:
                continue
            tconn.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({tn}, {cn}),"
                    " coalesce((SELECT max({c}) FROM {t}), 1),"
                    " (SELECT max({c}) FROM {t}) IS NOT NULL)"
                ).format(
                    tn=sql.Literal(table.name),
                    cn=sql.Literal(col.name),
                    c=sql.Identifier(col.name),
                    t=sql.Identifier(table.name),
                )
            )
