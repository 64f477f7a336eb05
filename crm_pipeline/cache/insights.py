"""`marketing/insights.json`: spend, impressions, clicks, leads and ratios by day and by campaign.

`leads` are the leads Meta reports for the ads (ad_insights_daily.leads), as in summary.json's
cost per lead; they were added to the rows without a schema bump (a new key breaks no reader).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, text

INSIGHTS_FILE = "marketing/insights.json"
SCHEMA_VERSION = 1
LOOKBACK_DAYS = 30  # days ending today (UTC); the asset's config may ask for another window
READS = ("ad_insights_daily", "campaigns")

_TOTALS = """
SELECT coalesce(sum(impressions), 0) AS impressions, coalesce(sum(clicks), 0) AS clicks,
       coalesce(sum(spend), 0) AS spend, coalesce(sum(leads), 0) AS leads,
       count(DISTINCT ad_id) AS ads,
       min(date) AS first_date, max(date) AS last_date
FROM ad_insights_daily WHERE date BETWEEN :since AND :until
"""
_BY_DAY = """
SELECT date, sum(impressions) AS impressions, sum(clicks) AS clicks, sum(spend) AS spend,
       sum(leads) AS leads
FROM ad_insights_daily WHERE date BETWEEN :since AND :until
GROUP BY date ORDER BY date
"""
_BY_CAMPAIGN = """
SELECT i.account_id, i.campaign_id, c.name AS campaign_name,
       sum(i.impressions) AS impressions, sum(i.clicks) AS clicks, sum(i.spend) AS spend,
       sum(i.leads) AS leads
FROM ad_insights_daily i LEFT JOIN campaigns c ON c.id = i.campaign_id
WHERE i.date BETWEEN :since AND :until
GROUP BY i.account_id, i.campaign_id, c.name
ORDER BY sum(i.spend) DESC, i.campaign_id
"""


def _ratios(impressions: int, clicks: int, spend) -> dict:
    # From the exact totals (spend is a Decimal), rounded so reruns give identical files.
    return {
        "ctr": round(clicks / impressions, 6) if impressions else None,
        "cpc": round(spend / clicks, 4) if clicks else None,
        "cpm": round(spend * 1000 / impressions, 4) if impressions else None,
    }


def build_marketing_insights(conn: Connection, since: dt.date, until: dt.date) -> dict[str, Any]:
    """The `marketing/insights.json` payload for `[since, until]`, read from `conn`."""
    params = {"since": since, "until": until}
    totals = conn.execute(text(_TOTALS), params).one()._asdict()
    by_day = [
        {**r._asdict(), "date": r.date.isoformat()} for r in conn.execute(text(_BY_DAY), params)
    ]
    by_campaign = [r._asdict() for r in conn.execute(text(_BY_CAMPAIGN), params)]
    return {
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "totals": {
            "impressions": totals["impressions"],
            "clicks": totals["clicks"],
            "spend": totals["spend"],
            "leads": totals["leads"],
            "ads": totals["ads"],
            **_ratios(totals["impressions"], totals["clicks"], totals["spend"]),
        },
        "by_day": by_day,
        "by_campaign": by_campaign,
    }


def build_recent(conn: Connection, lookback_days: int = LOOKBACK_DAYS) -> dict[str, Any]:
    """The payload for the `lookback_days` days ending today (UTC)."""
    until = dt.datetime.now(dt.UTC).date()
    return build_marketing_insights(conn, until - dt.timedelta(days=lookback_days - 1), until)
