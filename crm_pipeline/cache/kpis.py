"""KPI queries for summary.json. Aggregation happens in PostgreSQL, never row by row in Python.

Every query below returns a handful of aggregated rows (one per currency, month, tier, campaign
or day), so the summary costs the same whether the tables hold a thousand rows or a billion.
Python only shapes those rows into the document and does arithmetic on two or three totals.

The published contract for the result is `SUMMARY_JSON_SCHEMA` (rendered to
`docs/schemas/summary.schema.json`); read its descriptions for what each figure means.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import Connection, text

# Orders that count as revenue.
REVENUE_STATUSES = ("paid", "completed", "shipped")
# Bump when the document's shape or the meaning of a field changes.
SUMMARY_SCHEMA_VERSION = 2
LEAD_SOURCES = ("facebook_lead_ads", "other")
WINDOW_DAYS = 30

# Text ordering uses the "C" collation so that every list comes out in the same order whatever
# the server's locale (and in the same order as Python's `sorted`).

_REVENUE_BY_CURRENCY = """
SELECT currency,
       sum(amount) AS total,
       count(*) AS orders,
       coalesce(sum(amount) FILTER (WHERE created_at >= :start AND created_at < :end), 0)
           AS last_30_days,
       count(*) FILTER (WHERE created_at >= :start AND created_at < :end) AS orders_last_30_days,
       round(sum(amount) / count(*), 2) AS average_order_value
FROM orders WHERE status = ANY(:statuses)
GROUP BY currency ORDER BY currency COLLATE "C"
"""
_REVENUE_BY_MONTH = """
SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, currency,
       sum(amount) AS revenue, count(*) AS orders
FROM orders WHERE status = ANY(:statuses)
GROUP BY 1, 2 ORDER BY 1, currency COLLATE "C"
"""
_BY_TIER = """
SELECT c.tier, count(*) AS customers, coalesce(sum(o.revenue), 0) AS revenue
FROM customers c
LEFT JOIN (
    SELECT customer_id, sum(amount) AS revenue FROM orders
    WHERE status = ANY(:statuses) GROUP BY customer_id
) o ON o.customer_id = c.id
GROUP BY c.tier ORDER BY c.tier COLLATE "C"
"""
_AD_SPEND = """
SELECT coalesce(sum(spend), 0) AS total,
       coalesce(sum(spend) FILTER (WHERE date BETWEEN :first_day AND :last_day), 0)
           AS last_30_days,
       coalesce(sum(impressions), 0)::bigint AS impressions,
       coalesce(sum(clicks), 0)::bigint AS clicks,
       coalesce(sum(leads), 0)::bigint AS leads,
       coalesce(sum(leads) FILTER (WHERE date BETWEEN :first_day AND :last_day), 0)::bigint
           AS leads_last_30_days,
       min(date) AS first_date, max(date) AS last_date
FROM ad_insights_daily
"""
_SPEND_BY_CAMPAIGN = """
SELECT i.campaign_id, c.name AS campaign_name,
       sum(i.spend) AS spend,
       coalesce(sum(i.spend) FILTER (WHERE i.date BETWEEN :first_day AND :last_day), 0)
           AS spend_last_30_days,
       sum(i.impressions)::bigint AS impressions,
       sum(i.clicks)::bigint AS clicks,
       sum(i.leads)::bigint AS leads,
       CASE WHEN sum(i.leads) > 0 THEN round(sum(i.spend) / sum(i.leads), 2) END
           AS cost_per_lead
FROM ad_insights_daily i LEFT JOIN campaigns c ON c.id = i.campaign_id
GROUP BY i.campaign_id, c.name
ORDER BY sum(i.spend) DESC, i.campaign_id COLLATE "C"
"""
_LEADS = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE created_time >= :start AND created_time < :end) AS last_30_days,
       count(*) FILTER (WHERE form_id IS NOT NULL) AS lead_ads,
       count(*) FILTER (
           WHERE form_id IS NOT NULL AND created_time >= :start AND created_time < :end
       ) AS lead_ads_last_30_days
FROM leads
"""
_LEADS_BY_DAY = """
WITH days AS (
    SELECT d::date AS day
    FROM generate_series(CAST(:first_day AS date), CAST(:last_day AS date), interval '1 day') d
), per_day AS (
    SELECT (created_time AT TIME ZONE 'UTC')::date AS day, count(*) AS leads
    FROM leads WHERE created_time >= :start AND created_time < :end
    GROUP BY 1
)
SELECT days.day AS date, coalesce(per_day.leads, 0) AS leads
FROM days LEFT JOIN per_day USING (day)
ORDER BY days.day
"""
# First-touch attribution: each customer belongs to the campaign of their earliest lead that
# names one (directly, or through the lead's ad), and brings the revenue of their orders placed
# at or after that lead. One campaign per customer, so no revenue is counted twice.
_ROAS_BY_CAMPAIGN = """
WITH first_touch AS (
    SELECT DISTINCT ON (l.customer_id)
           l.customer_id, coalesce(l.campaign_id, a.campaign_id) AS campaign_id, l.created_time
    FROM leads l LEFT JOIN ads a ON a.id = l.ad_id
    WHERE l.customer_id IS NOT NULL AND coalesce(l.campaign_id, a.campaign_id) IS NOT NULL
    ORDER BY l.customer_id, l.created_time NULLS LAST, l.id COLLATE "C"
), attributed AS (
    SELECT f.campaign_id, count(DISTINCT f.customer_id) AS customers, count(o.id) AS orders,
           coalesce(sum(o.amount), 0) AS revenue
    FROM first_touch f
    LEFT JOIN orders o
      ON o.customer_id = f.customer_id AND o.status = ANY(:statuses)
     AND (f.created_time IS NULL OR o.created_at >= f.created_time)
    GROUP BY f.campaign_id
), spend AS (
    SELECT campaign_id, sum(spend) AS spend FROM ad_insights_daily GROUP BY campaign_id
)
SELECT coalesce(a.campaign_id, s.campaign_id) AS campaign_id, c.name AS campaign_name,
       coalesce(a.customers, 0) AS attributed_customers,
       coalesce(a.orders, 0) AS attributed_orders,
       coalesce(a.revenue, 0) AS attributed_revenue,
       coalesce(s.spend, 0) AS spend,
       CASE WHEN a.customers > 0 AND s.spend > 0 THEN round(a.revenue / s.spend, 4) END AS roas
FROM attributed a
FULL JOIN spend s ON s.campaign_id = a.campaign_id
LEFT JOIN campaigns c ON c.id = coalesce(a.campaign_id, s.campaign_id)
ORDER BY coalesce(a.campaign_id, s.campaign_id) COLLATE "C"
"""
_FRESHNESS = """
SELECT (SELECT max(synced_at) FROM ad_insights_daily) AS ad_insights_synced_at,
       (SELECT max(created_time) FROM leads) AS leads_created_time,
       (SELECT max(created_at) FROM orders) AS orders_created_at,
       (SELECT max(changed_at) FROM change_log) AS change_log_changed_at
"""


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def _ratio(numerator: Decimal, denominator: Decimal, places: int) -> Decimal:
    # Same rounding as PostgreSQL's round(numeric): half away from zero.
    return (numerator / denominator).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def compute_summary(conn: Connection, today: dt.date) -> dict[str, Any]:
    """The KPIs of summary.json as of `conn`'s snapshot; `today` is the last day (UTC) of the
    30-day window."""
    first_day = today - dt.timedelta(days=WINDOW_DAYS - 1)
    start = dt.datetime.combine(first_day, dt.time(), dt.UTC)
    end = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
    params = {
        "statuses": list(REVENUE_STATUSES),
        "first_day": first_day,
        "last_day": today,
        "start": start,
        "end": end,
    }

    def rows(sql: str) -> list[Any]:
        return conn.execute(text(sql), params).all()

    currencies = rows(_REVENUE_BY_CURRENCY)
    # Amounts in different currencies never add up: with more than one, the cross-currency
    # figures are null and by_currency / by_month carry the exact per-currency numbers.
    single = len(currencies) <= 1
    only = currencies[0] if len(currencies) == 1 else None
    orders = sum(r.orders for r in currencies)
    zero = Decimal(0)

    spend = rows(_AD_SPEND)[0]
    leads = rows(_LEADS)[0]
    roas_rows = [r._asdict() for r in rows(_ROAS_BY_CAMPAIGN)]
    attributed_customers = sum(r["attributed_customers"] for r in roas_rows)
    attributed_revenue = sum((r["attributed_revenue"] for r in roas_rows), start=zero)
    if not single:
        for row in roas_rows:
            row["attributed_revenue"] = row["roas"] = None
    tiers = rows(_BY_TIER)
    fresh = rows(_FRESHNESS)[0]

    return {
        "as_of": today.isoformat(),
        "window_30_days": {"first_day": first_day.isoformat(), "last_day": today.isoformat()},
        "revenue": {
            "statuses": sorted(REVENUE_STATUSES),
            "currency": only.currency if only else None,
            "total": (only.total if only else zero) if single else None,
            "last_30_days": (only.last_30_days if only else zero) if single else None,
            "orders": orders,
            "orders_last_30_days": sum(r.orders_last_30_days for r in currencies),
            "average_order_value": only.average_order_value if only else None,
            "by_month": [r._asdict() for r in rows(_REVENUE_BY_MONTH)],
            "by_currency": [r._asdict() for r in currencies],
        },
        "customers": {
            "total": sum(t.customers for t in tiers),
            "by_tier": [
                {"tier": t.tier, "customers": t.customers, "revenue": t.revenue if single else None}
                for t in tiers
            ],
        },
        "ad_spend": {
            "total": spend.total,
            "last_30_days": spend.last_30_days,
            "impressions": spend.impressions,
            "clicks": spend.clicks,
            "first_date": spend.first_date.isoformat() if spend.first_date else None,
            "last_date": spend.last_date.isoformat() if spend.last_date else None,
            "by_campaign": [r._asdict() for r in rows(_SPEND_BY_CAMPAIGN)],
        },
        "leads": {
            "total": leads.total,
            "last_30_days": leads.last_30_days,
            "by_day": [{"date": r.date.isoformat(), "leads": r.leads} for r in rows(_LEADS_BY_DAY)],
            "by_source": [
                {
                    "source": "facebook_lead_ads",
                    "leads": leads.lead_ads,
                    "last_30_days": leads.lead_ads_last_30_days,
                },
                {
                    "source": "other",
                    "leads": leads.total - leads.lead_ads,
                    "last_30_days": leads.last_30_days - leads.lead_ads_last_30_days,
                },
            ],
            "meta_reported": {"total": spend.leads, "last_30_days": spend.leads_last_30_days},
            "cost_per_lead": {
                "total": _ratio(spend.total, spend.leads, 2) if spend.leads else None,
                "last_30_days": _ratio(spend.last_30_days, spend.leads_last_30_days, 2)
                if spend.leads_last_30_days
                else None,
            },
        },
        "roas": {
            "attributed_customers": attributed_customers,
            "attributed_revenue": attributed_revenue if single else None,
            "spend": spend.total,
            "roas": _ratio(attributed_revenue, spend.total, 4)
            if single and attributed_customers and spend.total > 0
            else None,
            "by_campaign": roas_rows,
        },
        "freshness": {
            "ad_insights_synced_at": _iso(fresh.ad_insights_synced_at),
            "leads_created_time": _iso(fresh.leads_created_time),
            "orders_created_at": _iso(fresh.orders_created_at),
            "change_log_changed_at": _iso(fresh.change_log_changed_at),
        },
    }


# --- The published contract ---------------------------------------------------------------------
#
# The schema lives here, next to the queries that must honour it, so the running asset can
# validate against it wherever the package is installed. `docs/schemas/summary.schema.json` is
# its rendering for analysts (`summary_schema_json()`); a test keeps the two identical.

SCHEMA_ID = "https://crm-pipeline.local/schemas/summary.schema.json"
_DATE_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_DATE = r"^\d{4}-\d{2}-\d{2}$"


def _obj(description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _list(description: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": item}


def _count(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "description": description}


def _num(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {"type": ["number", "null"] if nullable else "number", "description": description}


def _str(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {"type": ["string", "null"] if nullable else "string", "description": description}


def _date(description: str, *, nullable: bool = False) -> dict[str, Any]:
    return {**_str(description, nullable=nullable), "format": "date", "pattern": _DATE}


def _timestamp(description: str, *, nullable: bool = True) -> dict[str, Any]:
    return {**_str(description, nullable=nullable), "format": "date-time", "pattern": _DATE_TIME}


_MONEY = (
    "Exact decimal amount (the JSON number carries every digit stored in PostgreSQL; parse it "
    "as a decimal, not a float, if cents matter)."
)
_MIXED = " Null when revenue orders use more than one currency (see revenue.by_currency)."
_CAMPAIGN_ID = _str("Meta campaign id, as in ad_insights_daily.campaign_id.")
_CAMPAIGN_NAME = _str("Campaign name from the campaigns table; null if not synced.", nullable=True)


def summary_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the whole summary.json document, envelope included."""
    window = "the 30-day window (window_30_days, UTC days, today included)"
    revenue = _obj(
        "Revenue from orders whose status is one of `statuses`. Amounts are in the orders' "
        "currency; refunded or cancelled orders never count.",
        {
            "statuses": _list("Order statuses counted as revenue.", {"type": "string"}),
            "currency": _str(
                "The single currency of all revenue orders; null when there are none or several.",
                nullable=True,
            ),
            "total": _num(
                f"All-time revenue. {_MONEY} 0 when there are no orders.{_MIXED}", nullable=True
            ),
            "last_30_days": _num(f"Revenue of orders created in {window}.{_MIXED}", nullable=True),
            "orders": _count("Number of revenue orders, all time, all currencies."),
            "orders_last_30_days": _count(f"Number of revenue orders created in {window}."),
            "average_order_value": _num(
                "total / orders, rounded half away from zero to 2 decimal places; null when "
                "there are no orders or several currencies.",
                nullable=True,
            ),
            "by_month": _list(
                "Revenue per calendar month (UTC) and currency, oldest month first, then by "
                "currency. Months without revenue orders are omitted.",
                _obj(
                    "One month in one currency.",
                    {
                        "month": {**_str("Month as YYYY-MM (UTC)."), "pattern": r"^\d{4}-\d{2}$"},
                        "currency": _str("ISO 4217 currency code of these orders."),
                        "revenue": _num(f"Revenue of the month. {_MONEY}"),
                        "orders": _count("Revenue orders in the month."),
                    },
                ),
            ),
            "by_currency": _list(
                "Exact figures per currency, ordered by currency code.",
                _obj(
                    "Revenue in one currency.",
                    {
                        "currency": _str("ISO 4217 currency code."),
                        "total": _num(f"All-time revenue in this currency. {_MONEY}"),
                        "orders": _count("Revenue orders in this currency."),
                        "last_30_days": _num(f"Revenue of orders created in {window}."),
                        "orders_last_30_days": _count(f"Revenue orders created in {window}."),
                        "average_order_value": _num("total / orders, rounded to 2 places."),
                    },
                ),
            ),
        },
    )
    customers = _obj(
        "Customers in the CRM, by tier.",
        {
            "total": _count("Number of customers."),
            "by_tier": _list(
                "One entry per tier present in the customers table, ordered by tier name "
                "(byte order).",
                _obj(
                    "One customer tier.",
                    {
                        "tier": _str("Tier name as stored in customers.tier."),
                        "customers": _count("Customers in this tier."),
                        "revenue": _num(
                            f"All-time revenue of this tier's customers. {_MONEY}{_MIXED}",
                            nullable=True,
                        ),
                    },
                ),
            ),
        },
    )
    ad_spend = _obj(
        "Meta ad spend from ad_insights_daily (one row per ad and day), in the ad accounts' "
        "currency.",
        {
            "total": _num(f"All-time spend. {_MONEY}"),
            "last_30_days": _num(f"Spend on the days of {window}."),
            "impressions": _count("All-time impressions."),
            "clicks": _count("All-time clicks."),
            "first_date": _date("Earliest day with insights; null if none.", nullable=True),
            "last_date": _date("Latest day with insights; null if none.", nullable=True),
            "by_campaign": _list(
                "All-time figures per campaign, highest spend first, then by campaign id.",
                _obj(
                    "One campaign.",
                    {
                        "campaign_id": _CAMPAIGN_ID,
                        "campaign_name": _CAMPAIGN_NAME,
                        "spend": _num(f"All-time spend. {_MONEY}"),
                        "spend_last_30_days": _num(f"Spend on the days of {window}."),
                        "impressions": _count("All-time impressions."),
                        "clicks": _count("All-time clicks."),
                        "leads": _count("Leads Meta reports for the campaign's ads."),
                        "cost_per_lead": _num(
                            "spend / leads, rounded to 2 places; null when leads is 0.",
                            nullable=True,
                        ),
                    },
                ),
            ),
        },
    )
    leads = _obj(
        "Leads in the CRM's leads table, and cost per lead from Meta's own lead counts.",
        {
            "total": _count("All leads in the CRM."),
            "last_30_days": _count(f"Leads created in {window}."),
            "by_day": _list(
                f"Leads per UTC day over {window}: always 30 entries, oldest first, days "
                "without leads included with 0.",
                _obj(
                    "One day.",
                    {"date": _date("UTC day."), "leads": _count("Leads created that day.")},
                ),
            ),
            "by_source": _list(
                "Leads per source, always both sources, ordered by source name. "
                "'facebook_lead_ads': the lead came from a Lead Ads form (leads.form_id is "
                "set); 'other': every other lead (form_id null: API, imports, manual entry).",
                _obj(
                    "One source.",
                    {
                        "source": {"enum": list(LEAD_SOURCES), "description": "Lead source."},
                        "leads": _count("All-time leads from this source."),
                        "last_30_days": _count(f"Leads from this source created in {window}."),
                    },
                ),
            ),
            "meta_reported": _obj(
                "Leads Meta attributes to ad spend (ad_insights_daily.leads, from the "
                "insights' lead actions). This is the denominator of cost_per_lead, since "
                "only these leads are attributable to spend.",
                {
                    "total": _count("All-time Meta-reported leads."),
                    "last_30_days": _count(f"Meta-reported leads on the days of {window}."),
                },
            ),
            "cost_per_lead": _obj(
                "Ad spend / Meta-reported leads over the same days, rounded half away from "
                "zero to 2 places; null when there are no Meta-reported leads.",
                {
                    "total": _num("All-time cost per lead.", nullable=True),
                    "last_30_days": _num(f"Cost per lead over {window}.", nullable=True),
                },
            ),
        },
    )
    roas_definition = (
        "Return on ad spend, where attributable. Attribution is first touch: a customer is "
        "attributed to the campaign of their earliest lead (by created_time, then lead id) "
        "that names a campaign, via leads.campaign_id or else the lead's ad "
        "(ads.campaign_id). The campaign's attributed revenue is the revenue of its "
        "attributed customers' revenue orders created at or after that lead (all of them if "
        "the lead has no created_time). ROAS = attributed revenue / all-time spend of the "
        "campaign, rounded half away from zero to 4 places. It is null when not "
        "attributable: the campaign has no attributed customers, has no spend, or revenue "
        "orders use more than one currency. Spend is assumed to be in the orders' currency."
    )
    roas = _obj(
        roas_definition,
        {
            "attributed_customers": _count("Customers attributed to any campaign."),
            "attributed_revenue": _num(
                f"Revenue attributed to all campaigns. {_MONEY}{_MIXED}", nullable=True
            ),
            "spend": _num("All-time ad spend of all campaigns (= ad_spend.total)."),
            "roas": _num(
                "Blended ROAS: attributed_revenue / spend; null when no customer is "
                "attributed, spend is 0, or several currencies.",
                nullable=True,
            ),
            "by_campaign": _list(
                "Every campaign with spend or attributed customers, ordered by campaign id "
                "(byte order).",
                _obj(
                    "One campaign.",
                    {
                        "campaign_id": _CAMPAIGN_ID,
                        "campaign_name": _CAMPAIGN_NAME,
                        "attributed_customers": _count("Customers attributed to the campaign."),
                        "attributed_orders": _count("Their revenue orders counted."),
                        "attributed_revenue": _num(
                            f"Revenue of those orders. {_MONEY}{_MIXED}", nullable=True
                        ),
                        "spend": _num("All-time spend of the campaign (0 if none)."),
                        "roas": _num(
                            "attributed_revenue / spend, or null (see above).", nullable=True
                        ),
                    },
                ),
            ),
        },
    )
    freshness = _obj(
        "How recent the data behind this file is: the newest timestamp in each source, as "
        "ISO 8601 in UTC, null when the table is empty.",
        {
            "ad_insights_synced_at": _timestamp("Newest ad_insights_daily.synced_at."),
            "leads_created_time": _timestamp("Newest leads.created_time."),
            "orders_created_at": _timestamp("Newest orders.created_at."),
            "change_log_changed_at": _timestamp("Newest change_log.changed_at (any DB write)."),
        },
    )
    document = _obj(
        "cache/analytics/summary.json: KPIs computed in SQL from one consistent snapshot of "
        "the source-of-truth database. Lists are always in a deterministic order.",
        {
            "generated_at": _timestamp("When the file was written (UTC).", nullable=False),
            "watermark": {
                **_str(
                    "Change-log watermark (a PostgreSQL xid8, as a decimal string): every DB "
                    "change with a lower transaction id is reflected in this file."
                ),
                "pattern": r"^\d+$",
            },
            "schema_version": {
                "const": SUMMARY_SCHEMA_VERSION,
                "description": "Version of this schema; bumped on any incompatible change.",
            },
            "as_of": _date("UTC day the KPIs were computed for; the last day of the window."),
            "window_30_days": _obj(
                "The 30 UTC days every `last_30_days` figure covers, both ends included.",
                {"first_day": _date("First day."), "last_day": _date("Last day (= as_of).")},
            ),
            "revenue": revenue,
            "customers": customers,
            "ad_spend": ad_spend,
            "leads": leads,
            "roas": roas,
            "freshness": freshness,
        },
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "crm-pipeline analytics summary",
        **document,
    }


def summary_schema_json() -> str:
    """The exact text of docs/schemas/summary.schema.json."""
    return json.dumps(summary_json_schema(), indent=2, ensure_ascii=False) + "\n"
