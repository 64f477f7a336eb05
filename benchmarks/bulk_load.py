"""B1 bulk load and B2 re-sync of `ad_insights_daily` through our upsert, against references.

    .venv/bin/python benchmarks/bulk_load.py [--quick] [--results FILE]

Runs on a private embedded PostgreSQL in a temp dir. The rows are generated deterministically:
1M rows = 2,000 ads x 500 days (--quick: 50k = 500 ads x 100 days) over 4 accounts, 100
campaigns and 400 ad sets, in the shape the product loads them: every Graph field a string, as
Meta sends it (spend "431.94", actions a JSON list with link_click and lead), plus `leads`.

B1, into empty tables (throughput, rows/s; ratio = ours / reference):
  ours       bulk_upsert(conn, schema.ad_insights_daily, rows) of all rows in one
             engine.begin(), with the columns the ad_insights_daily asset passes (CSV -> COPY
             into a temp stage -> INSERT ... ON CONFLICT with the IS DISTINCT FROM filter; the
             statement-level change-log triggers fire).
  reference  COPY of the same rows, already serialised as CSV (untimed), via psycopg
             cursor.copy() into `ref_copy` (LIKE ad_insights_daily INCLUDING ALL: same columns,
             defaults, primary key and indexes) carrying the same statement-level change-log
             triggers, since any client's write to that table fires them. Target: >= 0.5.
  variant    ours as the asset loads a backfill: one transaction and one bulk_upsert_by per
             account-month (DAYS_PER_TRANSACTION days of one account: 31 x 500 rows; --quick:
             31 x 125), against the same COPY (not the record row). One transaction per
             account-day, as the asset loaded before, is shown under the table.
  reference  pandas DataFrame.to_sql(if_exists="append", index=False), pandas' defaults
             (method=None, chunksize=None: what a typical user writes) from a typed frame built
             untimed (ints, float spend, date objects, actions as parsed JSON with dtype=JSONB)
             into `ref_to_sql`, made like `ref_copy`. Target: >= 3.
B2, the same rows again into the loaded tables (all conflicts):
  ours       the same bulk_upsert call (unchanged rows are skipped by IS DISTINCT FROM).
  reference  hand-written: temp stage table, COPY, INSERT ... ON CONFLICT DO UPDATE SET every
             non-key column (no change filter), into `ref_copy`. Target: >= 0.9.
  variant    the same with 10% of the rows changed (not the record row; same target).

Each timed step runs once at full size (seconds to minutes each; --quick: best of 3, to_sql
once), after a CHECKPOINT and, between phases, VACUUM ANALYZE, all untimed. Order: B1 reference
COPY, COPY into a third copy without the triggers (shown for scale), ours, ours by
account-month, ours by account-day, then to_sql; B2 reference then ours; the 10% variant ours
then reference, each of its runs starting from the base rows restored untimed. All B1 tables,
and both B2 tables after the variant, are checked equal (row count and column sums) so the
references did the same work.
"""

from __future__ import annotations

import datetime as dt
import io
import sys
from dataclasses import dataclass

import harness
import numpy as np
import orjson
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql
from sqlalchemy.dialects.postgresql import JSONB

from crm_pipeline.db import schema
from crm_pipeline.db.engine import get_engine
from crm_pipeline.db.upsert import bulk_upsert, bulk_upsert_by
from crm_pipeline.defs.crm.insight_loads import DAYS_PER_TRANSACTION

FIRST_DAY = dt.date(2024, 1, 1)
ACCOUNTS = 4
KEY = ("ad_id", "date")
B2_TABLES = ("ad_insights_daily", "ref_copy", "change_log")  # settled before every B2 run
CHECKSUM = (
    "SELECT count(*), sum(impressions), sum(clicks), sum(spend), sum(reach), sum(leads),"
    " sum(length(actions::text)), count(DISTINCT account_id || campaign_id || adset_id)"
    " FROM {}"
)


def insights(n_ads: int, n_days: int, changed_every: int = 0) -> pa.Table:
    """`n_ads` x `n_days` insight rows, day by day as the product loads them, all Graph fields
    strings; with `changed_every`, every n-th row has one more impression than the base data."""
    day = np.repeat(np.arange(n_days, dtype=np.int64), n_ads)
    ad = np.tile(np.arange(n_ads, dtype=np.int64), n_days)
    mix = (ad * 2_654_435_761 + day * 40_503) % 1_000_003
    impressions = 200 + mix % 20_000
    if changed_every:
        impressions = impressions + (np.arange(len(ad)) % changed_every == 0)
    clicks = impressions * (1 + mix % 7) // 300
    cents = impressions * (15 + mix % 40) // 10
    leads = clicks // 25

    def text(values: np.ndarray) -> pa.Array:
        return pc.cast(pa.array(values), pa.string())

    epoch_day = (FIRST_DAY - dt.date(1970, 1, 1)).days
    return pa.table(
        {
            "account_id": text(1_000_000_000_000 + ad % ACCOUNTS),
            "campaign_id": text(23_840_000_000_000_000 + ad % 100),
            "adset_id": text(23_845_000_000_000_000 + ad % 400),
            "ad_id": text(23_850_000_000_000_000 + ad),
            "date": pc.cast(pa.array((day + epoch_day).astype(np.int32), pa.date32()), pa.string()),
            "impressions": text(impressions),
            "clicks": text(clicks),
            "spend": pc.binary_join_element_wise(
                text(cents // 100), pc.utf8_lpad(text(cents % 100), 2, "0"), "."
            ),
            "reach": text(impressions * 7 // 10),
            "actions": pc.binary_join_element_wise(
                '[{"action_type": "link_click", "value": "',
                text(clicks),
                '"}, {"action_type": "lead", "value": "',
                text(leads),
                '"}]',
                "",
            ),
            "leads": pa.array(leads),
        }
    )


def csv_chunks(data: pa.Table) -> list[bytes]:
    """The rows as PostgreSQL CSV, 50k rows a chunk (done before the reference's clock starts)."""
    chunks = []
    for batch in data.to_batches(max_chunksize=50_000):
        buffer = io.BytesIO()
        pacsv.write_csv(
            pa.Table.from_batches([batch]),
            buffer,
            write_options=pacsv.WriteOptions(include_header=False),
        )
        chunks.append(buffer.getvalue())
    return chunks


def typed_frame(data: pa.Table) -> pd.DataFrame:
    """The rows as a pandas user holds them: numbers typed, spend a float, actions parsed."""
    frame = data.to_pandas()
    for column in ("impressions", "clicks", "reach"):
        frame[column] = frame[column].astype("int64")
    frame["spend"] = frame["spend"].astype("float64")
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    frame["actions"] = [orjson.loads(a) for a in frame["actions"]]
    return frame


def make_reference_table(conn: psycopg.Connection, name: str) -> None:
    """An empty copy of ad_insights_daily with its indexes and the same change-log triggers."""
    table = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE ad_insights_daily INCLUDING ALL)").format(table))
    key_expr = schema.STATEMENT_LOGGED_TABLES["ad_insights_daily"]
    for event, transition in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {trigger} AFTER {event} ON {table}"
                " REFERENCING {transition} TABLE AS changed_rows"
                " FOR EACH STATEMENT EXECUTE FUNCTION crm_log_statement_change({arg})"
            ).format(
                trigger=sql.Identifier(f"{name}_change_log_{event.lower()}"),
                event=sql.SQL(event),
                table=table,
                transition=sql.SQL(transition),
                arg=sql.Literal(key_expr),
            )
        )


def copy_into(conn: psycopg.Connection, table: str, chunks: list[bytes], columns) -> None:
    with conn.cursor().copy(
        sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
    ) as copy:
        for chunk in chunks:
            copy.write(chunk)


def staged_upsert(conn: psycopg.Connection, table: str, chunks: list[bytes], columns) -> None:
    """The hand-written re-sync: temp stage, COPY, INSERT ... ON CONFLICT DO UPDATE, commit."""
    target, cols = sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA"
            ).format(cols, target)
        )
        copy_into(conn, "stage", chunks, columns)
        conn.execute(
            sql.SQL(
                "INSERT INTO {target} ({cols}) SELECT {cols} FROM stage"
                " ON CONFLICT (ad_id, date) DO UPDATE SET {assignments}"
            ).format(
                target=target,
                cols=cols,
                assignments=sql.SQL(", ").join(
                    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                    for c in columns
                    if c not in KEY
                ),
            )
        )


def _size(n: int) -> str:
    return f"{n / 1_000_000:g}M" if n >= 1_000_000 else f"{n // 1000}k"


@dataclass
class Rows:
    """The rows in every form a path takes, all prepared before any clock starts."""

    data: pa.Table
    changed: pa.Table  # the same with every 10th row changed (B2's variant)
    chunks: list[bytes]  # `data` as CSV, for COPY
    changed_chunks: list[bytes]
    frame: pd.DataFrame  # `data` as a pandas user holds it, for to_sql
    partitions: list[pa.Table]  # `data` by account-day
    months: list[pa.Table]  # `data` by account-month, as the asset loads a backfill

    @property
    def columns(self) -> list[str]:
        """The insight columns, in the order every path writes them."""
        return self.data.column_names


def prepare_rows(n_ads: int, n_days: int) -> Rows:
    """`n_ads` x `n_days` insight rows, base and changed, serialised for every path."""
    data = insights(n_ads, n_days)
    changed = insights(n_ads, n_days, changed_every=10)
    # One account-day per partition (the shape the asset loaded before it took account-months).
    per_account_day = n_ads // ACCOUNTS
    by_account_day = data.sort_by([("account_id", "ascending"), ("date", "ascending")])
    partitions = [
        by_account_day.slice(i, per_account_day) for i in range(0, len(data), per_account_day)
    ]
    months = []
    for start in range(0, len(partitions), n_days):  # one account's days, in order
        days = partitions[start : start + n_days]
        months += [
            pa.concat_tables(days[i : i + DAYS_PER_TRANSACTION])
            for i in range(0, n_days, DAYS_PER_TRANSACTION)
        ]
    return Rows(
        data, changed, csv_chunks(data), csv_chunks(changed), typed_frame(data), partitions, months
    )


class Bench:
    """The private database's connections and the steps the B1/B2 clocks time."""

    def __init__(self, url: str, rows: Rows) -> None:
        self.rows = rows
        self.engine = get_engine(url)
        self.admin = psycopg.connect(harness.libpq(url), autocommit=True)
        self.ref = psycopg.connect(harness.libpq(url))
        for name in ("ref_copy", "ref_to_sql"):
            make_reference_table(self.admin, name)
        self.admin.execute("CREATE TABLE ref_bare (LIKE ad_insights_daily INCLUDING ALL)")

    def close(self) -> None:
        """Close both psycopg connections (the engine is disposed with the server)."""
        self.ref.close()
        self.admin.close()

    def settle(self, *tables: str) -> None:
        """VACUUM ANALYZE `tables`, then CHECKPOINT: no step pays for the previous one's I/O."""
        for table in tables:
            self.admin.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        self.admin.execute("CHECKPOINT")

    def checksum(self, table: str) -> tuple:
        """Row count and column sums of `table`: equal when two paths wrote the same rows."""
        return self.admin.execute(sql.SQL(CHECKSUM).format(sql.Identifier(table))).fetchone()

    def ours(self, rows_in: pa.Table):
        """Our path: bulk_upsert of `rows_in` in one transaction; its UpsertResult."""
        with self.engine.begin() as conn:
            return bulk_upsert(conn, schema.ad_insights_daily, rows_in)

    def ours_by_day(self, rows_in: pa.Table) -> None:
        """The asset's path for an account-month: one bulk_upsert_by on the date."""
        with self.engine.begin() as conn:
            bulk_upsert_by(conn, schema.ad_insights_daily, rows_in, "date")

    def reference_copy(self, table: str) -> None:
        """The COPY reference: the pre-serialised CSV into `table` in one transaction."""
        with self.ref.transaction():
            copy_into(self.ref, table, self.rows.chunks, self.rows.columns)

    def reference_to_sql(self) -> None:
        """The pandas reference: DataFrame.to_sql with pandas' defaults."""
        self.rows.frame.to_sql(
            "ref_to_sql", self.engine, if_exists="append", index=False, dtype={"actions": JSONB()}
        )

    def reference_resync(self, chunks: list[bytes]) -> None:
        """The hand-written B2 reference into ref_copy."""
        staged_upsert(self.ref, "ref_copy", chunks, self.rows.columns)

    def emptied(self, table: str):
        """An untimed `before` step: `table` truncated and the server settled."""

        def before() -> None:
            self.admin.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
            self.settle()

        return before

    def restored(self, load):
        """An untimed `before` step for B2: `load` the base rows, then settle B2's tables."""

        def before() -> None:
            load()
            self.settle(*B2_TABLES)

        return before


def measure_b1(bench: Bench, repeats: int) -> tuple[dict[str, float], int]:
    """B1 into empty tables: COPY (with, then without the triggers), ours, ours by
    account-month and by account-day, to_sql; every table checked equal. (seconds by step,
    ours' change_log rows)"""
    rows = bench.rows
    seconds = {}
    seconds["copy"] = harness.best_of(
        repeats, lambda: bench.reference_copy("ref_copy"), bench.emptied("ref_copy")
    )
    seconds["copy_bare"] = harness.best_of(
        repeats, lambda: bench.reference_copy("ref_bare"), bench.emptied("ref_bare")
    )
    seconds["b1"] = harness.best_of(
        repeats, lambda: bench.ours(rows.data), bench.emptied("ad_insights_daily")
    )
    b1_changes = bench.admin.execute(
        "SELECT count(*) FROM change_log WHERE entity = 'ad_insights_daily' AND op = 'insert'"
        " AND txid = (SELECT max(txid) FROM change_log WHERE entity = 'ad_insights_daily')"
    ).fetchone()[0]
    seconds["b1_months"] = harness.best_of(
        repeats,
        lambda: [bench.ours_by_day(month) for month in rows.months],
        bench.emptied("ad_insights_daily"),
    )
    seconds["b1_days"] = harness.best_of(
        repeats,
        lambda: [bench.ours(part) for part in rows.partitions],
        bench.emptied("ad_insights_daily"),
    )
    seconds["to_sql"] = harness.best_of(1, bench.reference_to_sql, bench.settle)
    loaded = bench.checksum("ad_insights_daily")
    assert loaded[0] == len(rows.data), loaded
    for table in ("ref_copy", "ref_to_sql", "ref_bare"):
        assert bench.checksum(table) == loaded, (table, bench.checksum(table), loaded)
    return seconds, b1_changes


def measure_b2(bench: Bench, repeats: int, seconds: dict[str, float]) -> dict:
    """B2: the same rows again (reference first), then 10% changed (ours first), each variant
    run from the base rows restored untimed. Adds to `seconds`; ours' UpsertResults."""
    rows = bench.rows
    bench.admin.execute("DROP TABLE ref_to_sql, ref_bare")
    bench.settle(*B2_TABLES)
    result = {}
    seconds["b2_ref"] = harness.best_of(
        repeats, lambda: bench.reference_resync(rows.chunks), bench.restored(lambda: None)
    )
    seconds["b2"] = harness.best_of(
        repeats, lambda: result.update(same=bench.ours(rows.data)), bench.restored(lambda: None)
    )
    assert (result["same"].inserted, result["same"].updated) == (0, 0), result["same"]
    seconds["b2v"] = harness.best_of(
        repeats,
        lambda: result.update(changed=bench.ours(rows.changed)),
        bench.restored(lambda: bench.ours(rows.data)),
    )
    assert result["changed"].updated == -(-len(rows.data) // 10), result["changed"]
    seconds["b2v_ref"] = harness.best_of(
        repeats,
        lambda: bench.reference_resync(rows.changed_chunks),
        bench.restored(lambda: bench.reference_resync(rows.chunks)),
    )
    assert bench.checksum("ref_copy") == bench.checksum("ad_insights_daily")
    return result


def bulk_measurements(rows: Rows, seconds: dict[str, float]) -> list[harness.Measurement]:
    """B1's three rows and B2's two, from the timed seconds."""
    rate = _rates(len(rows.data), seconds)
    size = f"{_size(len(rows.data))} rows"
    return [
        harness.measure(
            f"B1 bulk load {size}: ours vs COPY", rate["b1"], rate["copy"], "rows/s", ">= 0.5"
        ),
        harness.measure(
            f"B1 by account-month, {size}: ours vs COPY",
            rate["b1_months"],
            rate["copy"],
            "rows/s",
            ">= 0.5",
            note=f"variant: {len(rows.months)} transactions of up to {DAYS_PER_TRANSACTION} "
            "account-days, as the asset",
        ),
        harness.measure(
            f"B1 bulk load {size}: ours vs to_sql", rate["b1"], rate["to_sql"], "rows/s", ">= 3"
        ),
        harness.measure(
            f"B2 re-sync {size}, unchanged", rate["b2"], rate["b2_ref"], "rows/s", ">= 0.9"
        ),
        harness.measure(
            f"B2 re-sync {size}, 10% changed",
            rate["b2v"],
            rate["b2v_ref"],
            "rows/s",
            ">= 0.9",
            note="variant: not the record row",
        ),
    ]


def bulk_details(
    shape: tuple[int, int], repeats: int, seconds: dict[str, float], b1_changes: int, result
) -> list[str]:
    """The lines under the table: sizes, every step's seconds, COPY without triggers, and how
    many change_log rows and skipped rows ours produced."""
    n_ads, n_days = shape
    rows = n_ads * n_days
    rate = _rates(rows, seconds)
    runs = "one timed run each" if repeats == 1 else f"best of {repeats} (to_sql: 1)"
    return [
        f"{rows:,} rows = {n_ads:,} ads x {n_days} days; {runs}; seconds: "
        + ", ".join(f"{name} {secs:.2f}" for name, secs in seconds.items()),
        "reference tables: LIKE ad_insights_daily INCLUDING ALL + the same change-log triggers;"
        " COPY input pre-serialised as CSV (untimed)",
        f"COPY into the same table without triggers: {rate['copy_bare']:,.0f} rows/s"
        f" (ours = {rate['b1'] / rate['copy_bare']:.2f}x of it)",
        f"by account-day ({rows // (n_ads // ACCOUNTS):,} transactions"
        f" of {n_ads // ACCOUNTS} rows, as the asset loaded before 95cc8b5):"
        f" {rate['b1_days'] / rate['copy']:.3f} of COPY",
        "to_sql: pandas defaults (method=None, chunksize=None), typed frame, dtype actions=JSONB",
        f"change_log rows from ours: B1 {b1_changes} (one per account-day); B2 unchanged rows"
        f" skipped {result['same'].unchanged:,}; 10% variant updated {result['changed'].updated:,};"
        " the reference rewrites every row",
    ]


def _rates(rows: int, seconds: dict[str, float]) -> dict[str, float]:
    return {name: rows / secs for name, secs in seconds.items()}


def main() -> int:
    """Prepare the rows, time B1 then B2 on a private server, report both."""
    args = harness.parse_args(__doc__.splitlines()[0])
    n_ads, n_days = (500, 100) if args.quick else (2_000, 500)
    repeats = 3 if args.quick else 1
    rows = prepare_rows(n_ads, n_days)

    with harness.private_postgres("bulk-load") as (_, new_database):
        bench = Bench(new_database("bench"), rows)
        seconds, b1_changes = measure_b1(bench, repeats)
        result = measure_b2(bench, repeats, seconds)
        bench.close()

    harness.report(
        "B1/B2 ad_insights_daily bulk load and re-sync",
        bulk_measurements(rows, seconds),
        args,
        bulk_details((n_ads, n_days), repeats, seconds, b1_changes, result),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
