"""Loading an account's landed days of insights into PostgreSQL, a month to one transaction.

`ad_insights_daily` loads a run's account-days with this: each account's days (up to
`DAYS_PER_TRANSACTION`) go in one transaction, with one COPY and one upsert for all their ad
rows, one delete of the rows Meta stopped reporting, and Meta's totals of each day. Each day is
still exactly what loading it alone would leave, and its counts are its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, text

from crm_pipeline import lake
from crm_pipeline.db import schema
from crm_pipeline.db.insight_totals import load_account_totals
from crm_pipeline.db.upsert import UpsertResult, bulk_upsert_by
from crm_pipeline.defs.facebook.assets import INSIGHTS_STREAM
from crm_pipeline.facebook.account_totals import ACCOUNT_TOTALS_STREAM
from crm_pipeline.facebook.ids import meta_account_id
from crm_pipeline.facebook.transforms import account_total_rows, insight_rows

__all__ = ["DAYS_PER_TRANSACTION", "LandedDay", "load_insight_days", "read_landed_day"]

# An account's days are loaded this many to a transaction (a month: one commit, not thirty):
# each day stays atomic within it, and a transaction holds one account-month of rows at most.
DAYS_PER_TRANSACTION = 31

# The rows of the account's `days` that Meta did not report; their days, one per deleted row.
# The reported (day, ad) pairs come as one JSON text of [day, ad] pairs: an account-month is
# 15,000 pairs, which the driver would dump element by element as two arrays (a tenth of the
# whole load's time), while PostgreSQL reads the JSON in a few milliseconds.
_DELETE_UNREPORTED = text(
    "WITH reported AS MATERIALIZED ("
    "  SELECT (pair->>0)::date AS date, pair->>1 AS ad_id"
    "  FROM json_array_elements(CAST(:reported AS json)) AS r(pair))"
    " DELETE FROM ad_insights_daily t"
    " WHERE t.account_id = :account AND t.date = ANY(CAST(:days AS date[]))"
    " AND NOT EXISTS (SELECT 1 FROM reported r WHERE r.date = t.date AND r.ad_id = t.ad_id)"
    " RETURNING t.date"
)


@dataclass(frozen=True)
class LandedDay:
    """One account-day as landed: its ad rows (table rows), whether they may be mirrored (no
    quarantined row: else we cannot tell which ads Meta reports) and Meta's totals (None when
    there is nothing to trust)."""

    day: str
    rows: pa.Table
    mirror: bool
    totals: pa.Table | None


def read_landed_day(data_dir: Path, account_id: str, day: str) -> LandedDay:
    """The landed ad rows and Meta's totals of one account-day."""
    partition = f"account={account_id}/date={day}"
    rows = insight_rows(lake.read_partition(data_dir, INSIGHTS_STREAM, partition))
    mirror = not lake.quarantine_path(data_dir, INSIGHTS_STREAM, partition).exists()
    return LandedDay(day, rows, mirror, _landed_totals(data_dir, partition))


def _landed_totals(data_dir: Path, partition: str) -> pa.Table | None:
    """Meta's landed totals of the account-day as table rows; None when there is nothing to
    trust: never landed (an older sync) or a malformed row quarantined."""
    if lake.quarantine_path(data_dir, ACCOUNT_TOTALS_STREAM, partition).exists():
        return None
    try:
        return account_total_rows(lake.read_partition(data_dir, ACCOUNT_TOTALS_STREAM, partition))
    except FileNotFoundError:
        return None


def load_insight_days(
    conn: Connection, account_id: str, days: list[LandedDay]
) -> dict[str, dict[str, Any]]:
    """Upsert `days` of one account in `conn`'s transaction: every day's ad rows at once, the
    rows Meta no longer reports deleted from the mirrored days, Meta's totals of each day.
    Returns each day's counts."""
    tables = [d.rows for d in days if d.rows.num_rows]
    upserted: dict[str, UpsertResult] = {}
    if tables:
        all_rows = pa.concat_tables(tables, promote_options="default")
        upserted = bulk_upsert_by(conn, schema.ad_insights_daily, all_rows, "date")
    deleted = _delete_unreported(conn, account_id, [d for d in days if d.mirror])
    totals = {d.day: d.totals for d in days if d.totals is not None}
    if totals:
        load_account_totals(conn, meta_account_id(account_id), totals)
    counts = {}
    for landed in days:
        result = upserted.get(landed.day, UpsertResult(0, 0, 0))
        counts[landed.day] = {
            "rows": result.staged,
            "inserted": result.inserted,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "deleted": deleted.get(landed.day, 0),
            "leads": int(pc.sum(landed.rows["leads"]).as_py() or 0),
            "purchases": int(pc.sum(landed.rows["purchases"]).as_py() or 0),
            "upsert_seconds": round(result.seconds, 3),
        }
    return counts


def _delete_unreported(conn: Connection, account_id: str, days: list[LandedDay]) -> dict[str, int]:
    """Delete the rows of ads Meta no longer reports on `days`; how many went, per day."""
    if not days:
        return {}
    reported = [(d.day, ad) for d in days for ad in d.rows["ad_id"].to_pylist()]
    gone = conn.execute(
        _DELETE_UNREPORTED,
        {
            # Meta's account_id has no act_ prefix; the partition's does.
            "account": meta_account_id(account_id),
            "days": [dt.date.fromisoformat(d.day) for d in days],
            "reported": orjson.dumps(reported).decode(),
        },
    ).all()
    deleted: dict[str, int] = {}
    for (day,) in gone:
        deleted[day.isoformat()] = deleted.get(day.isoformat(), 0) + 1
    return deleted
