"""Meta's daily account totals in PostgreSQL, and how they compare with our ad-level rows.

`ad_account_insights_daily` mirrors what Meta reports for a whole ad account and day; the sum
of that day's `ad_insights_daily` rows must match it (spend to the cent, impressions, clicks).
When it does not, ad rows went missing or stale between Meta and us (deleted ads left out of
the read, a quarantined row, a row edited by hand). Dagster-free: the `matches_account_totals`
check (`defs/crm/insight_totals.py`) and tests call it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa
from sqlalchemy import Connection, text

from crm_pipeline.db import schema
from crm_pipeline.db.upsert import bulk_upsert

__all__ = [
    "TotalsDifference",
    "differing_totals",
    "load_account_totals",
]

# Per account-day: Meta's totals (none reported = zero) beside the sum of our ad rows, kept
# only where they differ. Spend is compared to the cent, as Meta reports it.
_COMPARE = """
WITH wanted AS (
    SELECT DISTINCT account_id, date
    FROM unnest(CAST(:accounts AS text[]), CAST(:days AS date[])) AS w(account_id, date)
), ours AS (
    SELECT i.account_id, i.date, sum(i.spend) AS spend,
           sum(i.impressions)::bigint AS impressions, sum(i.clicks)::bigint AS clicks
    FROM ad_insights_daily i JOIN wanted USING (account_id, date)
    GROUP BY i.account_id, i.date
)
SELECT w.account_id, w.date,
       round(coalesce(m.spend, 0), 2) AS meta_spend, round(coalesce(o.spend, 0), 2) AS our_spend,
       coalesce(m.impressions, 0) AS meta_impressions,
       coalesce(o.impressions, 0) AS our_impressions,
       coalesce(m.clicks, 0) AS meta_clicks, coalesce(o.clicks, 0) AS our_clicks
FROM wanted w
LEFT JOIN ad_account_insights_daily m USING (account_id, date)
LEFT JOIN ours o USING (account_id, date)
WHERE round(coalesce(m.spend, 0), 2) <> round(coalesce(o.spend, 0), 2)
   OR coalesce(m.impressions, 0) <> coalesce(o.impressions, 0)
   OR coalesce(m.clicks, 0) <> coalesce(o.clicks, 0)
ORDER BY w.account_id COLLATE "C", w.date
"""


@dataclass(frozen=True)
class TotalsDifference:
    """One account-day whose ad rows do not add up to Meta's account totals."""

    account_id: str  # Meta's, without act_
    date: dt.date
    meta_spend: Decimal
    our_spend: Decimal
    meta_impressions: int
    our_impressions: int
    meta_clicks: int
    our_clicks: int

    def as_json(self) -> dict:
        """A JSON-safe dict (money as decimal strings), for check metadata."""
        return {
            "account_id": self.account_id,
            "date": self.date.isoformat(),
            "spend": {"meta": str(self.meta_spend), "ours": str(self.our_spend)},
            "impressions": {"meta": self.meta_impressions, "ours": self.our_impressions},
            "clicks": {"meta": self.meta_clicks, "ours": self.our_clicks},
        }


def load_account_totals(conn: Connection, account_id: str, days: dict[str, pa.Table]) -> int:
    """Mirror Meta's totals of `days` of one account (`account_id` without act_; each day's
    landed rows) into `ad_account_insights_daily` inside `conn`'s transaction, with one upsert
    for the days Meta reported and one delete for those it did not; returns the rows written
    or deleted.

    No row from Meta means the account had nothing that day: a stored row is deleted, so the
    day compares against zero.
    """
    reported = [rows for rows in days.values() if rows.num_rows]
    written = 0
    if reported:
        all_rows = pa.concat_tables(reported, promote_options="default")
        written = bulk_upsert(conn, schema.ad_account_insights_daily, all_rows).staged
    empty = [dt.date.fromisoformat(day) for day, rows in days.items() if not rows.num_rows]
    if empty:
        written += conn.execute(
            text(
                "DELETE FROM ad_account_insights_daily"
                " WHERE account_id = :account AND date = ANY(CAST(:days AS date[]))"
            ),
            {"account": account_id, "days": empty},
        ).rowcount
    return written


def differing_totals(
    conn: Connection, account_days: Iterable[tuple[str, str]]
) -> list[TotalsDifference]:
    """The account-days (Meta's `account_id`, ISO day) whose ad rows' spend (to the cent),
    impressions or clicks do not add up to Meta's account totals, by account then day."""
    pairs = sorted(set(account_days))
    if not pairs:
        return []
    rows = conn.execute(
        text(_COMPARE),
        {"accounts": [a for a, _ in pairs], "days": [dt.date.fromisoformat(d) for _, d in pairs]},
    ).all()
    return [TotalsDifference(**row._mapping) for row in rows]
