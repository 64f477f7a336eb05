"""The source side of a clone: which tables, how they are read, in one consistent snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy import Table

from crm_pipeline.db.clone.masking import mask_column_sql
from crm_pipeline.db.engine import libpq_url
from crm_pipeline.db.schema import metadata

# Credentials and process state of this deployment, not data: a clone must not let anyone call
# our API, nor claim this deployment's cache worker's progress.
NOT_CLONED = frozenset({"api_keys", "cache_worker_state"})


def clone_tables() -> list[Table]:
    """Every data table of our schema, parents before children (not alembic_version, not the
    API keys)."""
    return [t for t in metadata.sorted_tables if t.name not in NOT_CLONED]


def stored_columns(table: Table, *, computed: bool = True) -> list:
    """The columns of `table`; without the generated ones (PostgreSQL computes those) when
    `computed` is False, as a COPY into the table needs."""
    return [c for c in table.columns if computed or c.computed is None]


def select_list(table: Table, key: bytes | None, *, computed: bool = True) -> sql.Composable:
    """The columns of `table` as read for the clone: masked per `PII_COLUMNS` when `key` is
    given. The same query feeds the copy and the source checksum, so masked clones verify."""
    items = []
    for col in stored_columns(table, computed=computed):
        ident = sql.Identifier(col.name)
        masked = mask_column_sql(table.name, col.name, key) if key is not None else None
        items.append(ident if masked is None else sql.SQL("{} AS {}").format(masked, ident))
    return sql.SQL(", ").join(items)


def checksum_sql(source: sql.Composable) -> sql.Composable:
    """Row count and order-independent checksum (`sum(hashtext(row::text))`) of a query."""
    return sql.SQL(
        "SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0)::bigint FROM ({src}) AS t"
    ).format(src=source)


def select_sql(table: Table, key: bytes | None, *, computed: bool = True) -> sql.Composable:
    """The query reading `table` for the clone (masked when `key` is given)."""
    return sql.SQL("SELECT {cols} FROM {t}").format(
        cols=select_list(table, key, computed=computed), t=sql.Identifier(table.name)
    )


@contextmanager
def source_snapshot(source_url: str) -> Iterator[psycopg.Connection]:
    """A REPEATABLE READ, READ ONLY transaction on the source: one snapshot for every table."""
    conn = psycopg.connect(libpq_url(source_url), autocommit=False)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET TIME ZONE 'UTC'")  # the first statement takes the snapshot
        yield conn
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()
