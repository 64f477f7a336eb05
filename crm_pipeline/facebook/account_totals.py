"""Meta's own daily totals of an ad account (level=account insights), checked and split by day.

They are read beside the ad-level rows with the same time range and status filter, so that the
sum of a day's ad rows can be compared with what Meta reports for the whole account (see
`crm_pipeline/db/insight_totals.py`). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from crm_pipeline.facebook.validate import Checked, metric_problem

__all__ = ["ACCOUNT_TOTALS_STREAM", "split_account_totals"]

# The raw stream: raw/fb_account_insights/account=<act_id>/date=<day>/part-0.parquet
ACCOUNT_TOTALS_STREAM = "fb_account_insights"


def _problem(row: dict, days: set[str]) -> str | None:
    if not str(row.get("account_id") or "").strip():
        return "missing account_id"
    if row.get("date_start") not in days:
        return f"date_start {row.get('date_start')!r} is none of the days asked for"
    return metric_problem(row, ("impressions", "clicks"))


def split_account_totals(rows: Iterable[dict], days: list[str]) -> dict[str, Checked]:
    """One account query's rows checked and grouped by day (`date_start`), every day of `days`
    present (a day Meta sent no row for has none: its totals are zero).

    A malformed row cannot be trusted to belong to the day it names: it is quarantined in every
    day of the query, so none of them is compared against it.
    """
    wanted = set(days)
    checked = {day: Checked() for day in days}
    for row in rows:
        reason = _problem(row, wanted) if isinstance(row, dict) else "not a JSON object"
        if reason:
            for day_checked in checked.values():
                day_checked.bad.append({"reason": reason, "record": row})
        else:
            checked[row["date_start"]].good.append(row)
    return checked
