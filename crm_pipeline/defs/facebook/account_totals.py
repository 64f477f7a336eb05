"""Meta's daily account totals, fetched and landed beside the ad-level insights.

`fb_ad_insights_raw` calls this once per account window, through the same governed client and
with the same time range and status filter as the ad-level read, so that `ad_insights_daily`'s
`matches_account_totals` check compares like with like.
"""

import datetime as dt
from dataclasses import dataclass, field

from crm_pipeline import lake
from crm_pipeline.defs.resources import StorageResource
from crm_pipeline.facebook.account_totals import ACCOUNT_TOTALS_STREAM, split_account_totals
from crm_pipeline.facebook.client import GraphClient
from crm_pipeline.facebook.fields import ACCOUNT_INSIGHT_FIELDS, ACCOUNT_LEVEL
from crm_pipeline.facebook.transforms import to_arrow


@dataclass
class LandedTotals:
    """What one window's account totals landed: rows per day, and the malformed rows."""

    rows: dict[str, int] = field(default_factory=dict)
    bad: list[dict] = field(default_factory=list)


def land_account_totals(
    client: GraphClient,
    storage: StorageResource,
    account_id: str,
    days: list[str],
    *,
    page_size: int,
) -> LandedTotals:
    """Read Meta's totals of `account_id` for the consecutive `days` with one query and land
    one file per day under raw/fb_account_insights/ (an empty file when Meta sent no row: the
    account had nothing that day)."""
    since, until = dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1])
    rows = client.iter_insights(
        account_id,
        since,
        until,
        fields=ACCOUNT_INSIGHT_FIELDS,
        level=ACCOUNT_LEVEL,
        limit=page_size,
    )
    by_day = split_account_totals(list(rows), days)
    # A malformed row is in every day's bucket: the first day's are all of them.
    landed = LandedTotals(bad=by_day[days[0]].bad)
    for day, checked in by_day.items():
        partition = f"account={account_id}/date={day}"
        table = to_arrow(checked.good, ACCOUNT_INSIGHT_FIELDS)
        lake.land_partition(storage.data_path(), ACCOUNT_TOTALS_STREAM, partition, table)
        lake.write_quarantine(storage.data_path(), ACCOUNT_TOTALS_STREAM, partition, checked.bad)
        landed.rows[day] = table.num_rows
    return landed
