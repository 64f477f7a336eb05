"""Full database clone: one consistent snapshot of the source copied to PostgreSQL or Parquet.

- **Consistent**: every table is read inside one REPEATABLE READ, READ ONLY transaction on the
  source, one table after another, so writes committed during the clone are all in it or all
  out of it. (Tables are copied sequentially; a parallel copy would export this snapshot with
  `pg_export_snapshot()` and `SET TRANSACTION SNAPSHOT` it in each worker.)
- **Streaming**: PostgreSQL targets get `COPY (SELECT ...) TO STDOUT` piped chunk by chunk into
  `COPY ... FROM STDIN`; Parquet targets read through a server-side cursor in batches written
  with a pyarrow `ParquetWriter`, one file per table. Memory stays bounded by one batch.
- **Atomic**: a PostgreSQL target gets our migrations and all rows in ONE transaction, verified
  before it commits (any failure rolls everything back). A directory target is written to a
  temporary directory next to it and renamed into place only after verification.
- **Verified**: per table, `count(*)` and an order-independent checksum
  (`sum(hashtext(row::text))`) computed in SQL on the source (in the snapshot) and on the
  target. For Parquet, the files are read back into a temporary table of the same type so the
  checksum is computed from what was actually written.
- **`mask_pii`**: names, emails and phones become keyed hashes (HMAC-SHA256, computed in SQL
  from the key's inner and outer pads, so no extension is needed). Equal inputs give equal
  outputs, so joins and uniqueness survive; emails keep an email shape. The key comes from
  `CRM_MASK_KEY`; without it a fixed built-in key is used, which keeps clones reproducible but
  is guessable: production must set `CRM_MASK_KEY`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql
from sqlalchemy import BigInteger, Date, DateTime, Integer, Numeric, Table, create_engine
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from crm_pipeline.config import load_settings, normalize_database_url, redact_url
from crm_pipeline.db.engine import libpq_url
from crm_pipeline.db.schema import Xid8, metadata

MASKED_EMAIL_DOMAIN = "masked.invalid"
# table -> column -> kind of PII
PII_COLUMNS: dict[str, dict[str, str]] = {
    "customers": {"name": "name", "email": "email", "phone": "phone"},
    "leads": {"email": "email", "phone": "phone", "full_name": "name"},
}
# Lead Ads `field_data` entries ({name, values}) whose values are masked, by kind.
PII_FIELD_NAMES = {
    "email": "email",
    "phone": "phone",
    "phone_number": "phone",
    "full_name": "name",
    "first_name": "name",
    "last_name": "name",
}
BATCH_ROWS = 20_000
PROGRESS_EVERY = 100_000
_HASH_CHARS = 24  # 96 bits of the HMAC: collisions are negligible, uniqueness survives


class CloneError(ValueError):
    """The clone cannot start or did not verify; the message is safe to print."""


@dataclass
class TableReport:
    """One table's copy and verification figures."""

    table: str
    rows: int = 0
    seconds: float = 0.0
    source_count: int | None = None
    source_checksum: int | None = None
    target_count: int | None = None
    target_checksum: int | None = None

    @property
    def ok(self) -> bool:
        return (
            self.source_count is not None
            and self.source_count == self.target_count == self.rows
            and self.source_checksum == self.target_checksum
        )


@dataclass
class CloneResult:
    """What a clone did; `target` is printable (passwords masked)."""

    target: str
    kind: str  # "postgres" | "parquet"
    masked: bool
    tables: list[TableReport] = field(default_factory=list)
    seconds: float = 0.0
    snapshot_at: str = ""

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def format_table(self) -> str:
        """The verification table printed at the end of `clone-db`."""
        lines = [
            f"{'table':<20} {'rows':>10} {'source checksum':>22} {'target checksum':>22}  ok",
        ]
        for t in self.tables:
            lines.append(
                f"{t.table:<20} {t.rows:>10} {t.source_checksum!s:>22} "
                f"{t.target_checksum!s:>22}  {'yes' if t.ok else 'NO'}"
            )
        rate = self.rows / self.seconds if self.seconds else 0.0
        lines.append(
            f"{len(self.tables)} tables, {self.rows} rows in {self.seconds:.2f}s "
            f"({rate:,.0f} rows/s){', PII masked' if self.masked else ''}"
        )
        return "\n".join(lines)


# --- helpers ------------------------------------------------------------------------------------


# Credentials and process state of this deployment, not data: a clone must not let anyone call
# our API, nor claim this deployment's cache worker's progress.
NOT_CLONED = frozenset({"api_keys", "cache_worker_state"})


def clone_tables() -> list[Table]:
    """Every data table of our schema, parents before children (not alembic_version, not the
    API keys)."""
    return [t for t in metadata.sorted_tables if t.name not in NOT_CLONED]


def mask_key(env: dict[str, str] | None = None) -> bytes:
    """The HMAC key: `CRM_MASK_KEY`, else the built-in (public) default."""
    return load_settings(env).effective_mask_key()


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def _normalise(kind: str, value: str) -> str:
    return value.strip().lower() if kind == "email" else value


def mask_value(kind: str, value: str | None, key: bytes) -> str | None:
    """The masked form of `value` (Python twin of the SQL expression, for tests and docs)."""
    if value is None:
        return None
    digest = hmac.new(key, _normalise(kind, value).encode(), hashlib.sha256).hexdigest()
    digest = digest[:_HASH_CHARS]
    if kind == "email":
        return f"{digest}@{MASKED_EMAIL_DOMAIN}"
    return f"{kind}-{digest}"


def _mask_sql(kind: str, expr: sql.Composable, key: bytes) -> sql.Composable:
    """SQL for HMAC-SHA256(key, value) with built-in sha256(): H(opad || H(ipad || m))."""
    ipad, opad = _pads(key)
    value = sql.SQL("lower(btrim({}))").format(expr) if kind == "email" else expr
    digest = sql.SQL(
        "left(encode(sha256({opad}::bytea || sha256({ipad}::bytea || convert_to({v}, 'UTF8'))),"
        " 'hex'), {n})"
    ).format(opad=sql.Literal(opad), ipad=sql.Literal(ipad), v=value, n=sql.Literal(_HASH_CHARS))
    if kind == "email":
        return sql.SQL("({d} || {s})").format(d=digest, s=sql.Literal("@" + MASKED_EMAIL_DOMAIN))
    return sql.SQL("({p} || {d})").format(p=sql.Literal(f"{kind}-"), d=digest)


def _mask_field_data_sql(column: sql.Composable, key: bytes) -> sql.Composable:
    """Mask the values of PII entries in a Lead Ads `field_data` array; keep everything else."""
    value = sql.SQL("(v #>> '{}')")
    by_kind = {
        kind: sql.SQL(
            "(SELECT coalesce(jsonb_agg(to_jsonb({m}) ORDER BY i), '[]'::jsonb)"
            " FROM jsonb_array_elements(e->'values') WITH ORDINALITY AS w(v, i))"
        ).format(m=_mask_sql(kind, value, key))
        for kind in ("email", "phone", "name")
    }
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN e->>'name' = {n} THEN jsonb_set(e, '{{values}}', {m})").format(
            n=sql.Literal(name), m=by_kind[kind]
        )
        for name, kind in PII_FIELD_NAMES.items()
    )
    return sql.SQL(
        "CASE WHEN jsonb_typeof({c}) = 'array' THEN (SELECT jsonb_agg("
        "CASE WHEN jsonb_typeof(e) = 'object' AND jsonb_typeof(e->'values') = 'array' "
        "THEN CASE {cases} ELSE e END ELSE e END ORDER BY o)"
        " FROM jsonb_array_elements({c}) WITH ORDINALITY AS x(e, o)) ELSE {c} END"
    ).format(c=column, cases=cases)


def stored_columns(table: Table, *, computed: bool = True) -> list:
    """The columns of `table`; without the generated ones (PostgreSQL computes those) when
    `computed` is False, as a COPY into the table needs."""
    return [c for c in table.columns if computed or c.computed is None]


def select_list(table: Table, key: bytes | None, *, computed: bool = True) -> sql.Composable:
    """The columns of `table` as read for the clone: masked when `key` is given."""
    items = []
    for col in stored_columns(table, computed=computed):
        ident = sql.Identifier(col.name)
        expr: sql.Composable = ident
        if key is not None:
            kind = PII_COLUMNS.get(table.name, {}).get(col.name)
            if kind is not None:
                expr = _mask_sql(kind, ident, key)
            elif table.name == "leads" and col.name == "field_data":
                expr = _mask_field_data_sql(ident, key)
        if expr is not ident:
            expr = sql.SQL("{} AS {}").format(expr, ident)
        items.append(expr)
    return sql.SQL(", ").join(items)


def _checksum_sql(source: sql.Composable) -> sql.Composable:
    return sql.SQL(
        "SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0)::bigint FROM ({src}) AS t"
    ).format(src=source)


def _select_sql(table: Table, key: bytes | None, *, computed: bool = True) -> sql.Composable:
    return sql.SQL("SELECT {cols} FROM {t}").format(
        cols=select_list(table, key, computed=computed), t=sql.Identifier(table.name)
    )


def _progress(out: TextIO | None, table: str, rows: int, started: float, done: bool) -> None:
    if out is None:
        return
    elapsed = time.monotonic() - started
    rate = rows / elapsed if elapsed > 0 else 0.0
    state = "done" if done else "..."
    print(
        f"clone {table:<20} {rows:>10} rows  {elapsed:6.2f}s  {rate:>10,.0f} rows/s {state}",
        file=out,
        flush=True,
    )


@contextmanager
def _source_snapshot(source_url: str) -> Iterator[psycopg.Connection]:
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


def _is_database_url(target: str) -> bool:
    return target.startswith(("postgresql:", "postgresql+", "postgres:"))


# --- entry point --------------------------------------------------------------------------------


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
    use it to inject a failure midway).
    """
    source_url = normalize_database_url(source_url)
    use_key = (key or mask_key()) if mask_pii else None
    if isinstance(target, str) and _is_database_url(target):
        target_url = normalize_database_url(target, "--to")
        if make_url(target_url) == make_url(source_url):
            raise CloneError("the clone target is the source database itself")
        return _clone_to_postgres(source_url, target_url, use_key, progress, on_table_done)
    return _clone_to_parquet(source_url, Path(target), use_key, progress, on_table_done)


def _finish(result: CloneResult, started: float) -> CloneResult:
    result.seconds = time.monotonic() - started
    if not result.ok:
        bad = ", ".join(t.table for t in result.tables if not t.ok)
        raise CloneError(f"clone did not verify (row count or checksum differs): {bad}")
    return result


# --- PostgreSQL target --------------------------------------------------------------------------


def _user_tables(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables"
        " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        " AND table_schema NOT LIKE 'pg_toast%' AND table_schema NOT LIKE 'pg_temp%'"
    ).fetchall()
    return [r[0] for r in rows]


def _clone_to_postgres(
    source_url: str,
    target_url: str,
    key: bytes | None,
    progress: TextIO | None,
    on_table_done: Callable[[TableReport], None] | None,
) -> CloneResult:
    from alembic import command

    from crm_pipeline.db.migrate import alembic_config

    started = time.monotonic()
    result = CloneResult(target=redact_url(target_url), kind="postgres", masked=key is not None)
    engine = create_engine(target_url, poolclass=NullPool, hide_parameters=True)
    try:
        with engine.connect() as sa_conn:
            tconn: psycopg.Connection = sa_conn.connection.driver_connection
            with sa_conn.begin():  # ONE transaction: schema + rows + verification
                existing = _user_tables(tconn)
                if existing:
                    shown = ", ".join(sorted(existing)[:5])
                    raise CloneError(
                        f"refusing to clone into {redact_url(target_url)}: it is not empty "
                        f"({len(existing)} table(s), e.g. {shown}); give a new, empty database"
                    )
                cfg = alembic_config()
                cfg.attributes["connection"] = sa_conn
                command.upgrade(cfg, "head")
                tconn.execute("SET LOCAL TIME ZONE 'UTC'")
                # The target's change-log (and FK) triggers must not fire while loading: the
                # change_log table itself is copied as it is in the source.
                tconn.execute("SET LOCAL session_replication_role = replica")
                with _source_snapshot(source_url) as sconn:
                    result.snapshot_at = str(sconn.execute("SELECT now()").fetchone()[0])
                    for table in clone_tables():
                        report = _copy_table_pg(sconn, tconn, table, key, progress)
                        result.tables.append(report)
                        if on_table_done is not None:
                            on_table_done(report)
                    for table, report in zip(clone_tables(), result.tables, strict=True):
                        report.source_count, report.source_checksum = sconn.execute(
                            _checksum_sql(_select_sql(table, key))
                        ).fetchone()
                tconn.execute("SET LOCAL session_replication_role = origin")
                for table, report in zip(clone_tables(), result.tables, strict=True):
                    report.target_count, report.target_checksum = tconn.execute(
                        _checksum_sql(
                            sql.SQL("SELECT * FROM {}").format(sql.Identifier(table.name))
                        )
                    ).fetchone()
                _advance_identities(tconn)
                _finish(result, started)  # raises (and so rolls back) on a mismatch
    finally:
        engine.dispose()
    return result


def _copy_table_pg(
    sconn: psycopg.Connection,
    tconn: psycopg.Connection,
    table: Table,
    key: bytes | None,
    progress: TextIO | None,
) -> TableReport:
    started = time.monotonic()
    # Generated columns are recomputed by the target, not copied.
    writable = stored_columns(table, computed=False)
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in writable)
    rows = 0
    next_report = PROGRESS_EVERY
    with (
        sconn.cursor().copy(
            sql.SQL("COPY ({q}) TO STDOUT").format(q=_select_sql(table, key, computed=False))
        ) as out,
        tconn.cursor().copy(
            sql.SQL("COPY {t} ({c}) FROM STDIN").format(t=sql.Identifier(table.name), c=cols)
        ) as into,
    ):
        for chunk in out:
            into.write(chunk)
            rows += bytes(chunk).count(b"\n")  # text format escapes newlines inside values
            if rows >= next_report:
                _progress(progress, table.name, rows, started, done=False)
                next_report = rows + PROGRESS_EVERY
    seconds = time.monotonic() - started
    _progress(progress, table.name, rows, started, done=True)
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


# --- Parquet target -----------------------------------------------------------------------------


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
        return pa.decimal128(ctype.precision or 38, ctype.scale or 0)
    return pa.string()


def arrow_schema(table: Table) -> pa.Schema:
    """The Parquet schema of one cloned table."""
    return pa.schema([pa.field(c.name, arrow_type(c), nullable=c.nullable) for c in table.columns])


def _text_cast(table: Table) -> list[bool]:
    return [isinstance(c.type, JSONB | Xid8) for c in table.columns]


def _clone_to_parquet(
    source_url: str,
    target: Path,
    key: bytes | None,
    progress: TextIO | None,
    on_table_done: Callable[[TableReport], None] | None,
) -> CloneResult:
    started = time.monotonic()
    target = target.expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CloneError(f"refusing to clone into {target}: it exists and is not an empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    result = CloneResult(target=str(target), kind="parquet", masked=key is not None)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        with _source_snapshot(source_url) as sconn:
            result.snapshot_at = str(sconn.execute("SELECT now()").fetchone()[0])
            for table in clone_tables():
                report = _copy_table_parquet(sconn, table, tmp, key, progress)
                report.source_count, report.source_checksum = sconn.execute(
                    _checksum_sql(_select_sql(table, key))
                ).fetchone()
                result.tables.append(report)
                if on_table_done is not None:
                    on_table_done(report)
        _verify_parquet(source_url, tmp, result)
        _finish(result, started)
        manifest = {
            "snapshot_at": result.snapshot_at,
            "masked": result.masked,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "tables": [asdict(t) for t in result.tables],
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _fsync_dir(tmp)
        os.replace(tmp, target)  # an empty existing target folder is replaced atomically
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_table_parquet(
    sconn: psycopg.Connection,
    table: Table,
    folder: Path,
    key: bytes | None,
    progress: TextIO | None,
) -> TableReport:
    started = time.monotonic()
    schema = arrow_schema(table)
    as_text = _text_cast(table)
    cols = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c.name)) if t else sql.Identifier(c.name)
        for c, t in zip(table.columns, as_text, strict=True)
    )
    query = sql.SQL("SELECT {cols} FROM ({src}) AS s").format(
        cols=cols, src=_select_sql(table, key)
    )
    rows = 0
    next_report = PROGRESS_EVERY
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
            if rows >= next_report:
                _progress(progress, table.name, rows, started, done=False)
                next_report = rows + PROGRESS_EVERY
        if rows == 0:
            writer.write_table(schema.empty_table())
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    seconds = time.monotonic() - started
    _progress(progress, table.name, rows, started, done=True)
    return TableReport(table=table.name, rows=rows, seconds=seconds)


def _verify_parquet(source_url: str, folder: Path, result: CloneResult) -> None:
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
            report.target_count, report.target_checksum = conn.execute(
                _checksum_sql(sql.SQL("SELECT * FROM {}").format(tmp))
            ).fetchone()
        conn.rollback()
